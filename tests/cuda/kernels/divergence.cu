// Divergent control flow: data-dependent trip counts, early returns, nested branches with
// break/continue. Reference: vcuda_tests::reference::{collatz_steps, branchy}.

// steps[i] = number of Collatz steps from start[i] to 1 (start[i] >= 1; 64-bit intermediate).
extern "C" __global__ void collatz(const unsigned int *start, unsigned int *steps, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    unsigned long long x = start[i];
    unsigned int s = 0;
    while (x != 1) {
        x = (x & 1) ? 3 * x + 1 : x / 2;
        ++s;
    }
    steps[i] = s;
}

// Early returns at several depths and a loop with break/continue; see reference::branchy.
extern "C" __global__ void branchy(const int *in, int *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    int v = in[i];
    if (v < 0) {
        out[i] = -1;
        return;
    }
    int acc = 0;
    for (int k = 0; k < v; ++k) {
        if (k % 3 == 0)
            continue;
        if (acc > 1000)
            break;
        acc += (k & 1) ? k : 2 * k;
    }
    if (v % 7 == 0) {
        out[i] = acc * 2;
        return;
    }
    out[i] = acc;
}
