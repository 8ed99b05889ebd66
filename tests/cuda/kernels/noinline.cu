// Real device function calls (`__noinline__`): parameters, return values, a call in a loop,
// and recursion (which needs a call stack in local memory).
// Reference: vcuda_tests::reference::{horner, gcd}.

// p(x) = 1 + 2x + 3x^2 + ... + (degree+1) x^degree, by Horner's rule.
__device__ __noinline__ float horner(float x, int degree)
{
    float acc = 0.0f;
    for (int k = degree; k >= 0; --k)
        acc = acc * x + (float)(k + 1);
    return acc;
}

__device__ __noinline__ unsigned int gcd(unsigned int a, unsigned int b)
{
    return b == 0 ? a : gcd(b, a % b);
}

extern "C" __global__ void call_noinline(const float *x, const unsigned int *a, const unsigned int *b,
                                         float *poly, unsigned int *g, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    poly[i] = horner(x[i], i % 8);
    g[i] = gcd(a[i], b[i]);
}
