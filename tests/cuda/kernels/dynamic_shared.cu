// Dynamic shared memory (`extern __shared__`, size given at launch).
// Reference: vcuda_tests::reference::{reverse_blocks, block_prefix_sums}.

// Reverses each block's blockDim.x-element chunk of data in place.
// Dynamic shared size: blockDim.x * sizeof(float).
extern "C" __global__ void reverse_blocks(float *data)
{
    extern __shared__ float buf[];
    int t = threadIdx.x;
    int base = blockIdx.x * blockDim.x;
    buf[t] = data[base + t];
    __syncthreads();
    data[base + t] = buf[blockDim.x - 1 - t];
}

// Inclusive prefix sums within each block (Hillis-Steele, double-buffered in dynamic shared
// memory after a static shared counter). Dynamic shared size: 2 * blockDim.x * sizeof(int).
extern "C" __global__ void block_prefix_sums(const int *in, int *out, int *rounds)
{
    __shared__ int round_count;
    extern __shared__ int scan[];
    int t = threadIdx.x;
    int n = blockDim.x;
    int base = blockIdx.x * n;
    int *src = scan;
    int *dst = scan + n;
    src[t] = in[base + t];
    if (t == 0)
        round_count = 0;
    __syncthreads();
    for (int offset = 1; offset < n; offset <<= 1) {
        dst[t] = t >= offset ? src[t] + src[t - offset] : src[t];
        if (t == 0)
            ++round_count;
        __syncthreads();
        int *tmp = src;
        src = dst;
        dst = tmp;
    }
    out[base + t] = src[t];
    if (t == 0)
        rounds[blockIdx.x] = round_count;
}
