// Warp shuffles and votes. Launch with blockDim.x a multiple of 32; w = global warp index,
// lane = threadIdx.x % 32. Reference: vcuda_tests::reference::warp.

#define FULL 0xffffffffu

// out[w] = sum of the warp's 32 inputs (tree through __shfl_down_sync; lane 0 holds it).
extern "C" __global__ void shfl_down_sum(const int *in, int *out)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = in[i];
    for (int offset = 16; offset > 0; offset >>= 1)
        v += __shfl_down_sync(FULL, v, offset);
    if ((threadIdx.x & 31) == 0)
        out[i / 32] = v;
}

// out[i] = max over the warp for every lane (butterfly through __shfl_xor_sync).
extern "C" __global__ void shfl_xor_max(const int *in, int *out)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = in[i];
    for (int mask = 16; mask > 0; mask >>= 1)
        v = max(v, __shfl_xor_sync(FULL, v, mask));
    out[i] = v;
}

// out[i] = in[warp_base + src[i] % 32]: each lane reads an arbitrary lane's value.
extern "C" __global__ void shfl_gather(const float *in, const int *src, float *out)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = __shfl_sync(FULL, in[i], src[i] & 31);
}

// Per warp: ballot[w] = bits of (in[i] != 0); all[w], any[w] = __all_sync / __any_sync of it;
// low16[w] = ballot of the same predicate among lanes 0..15 only (a partial-warp mask inside a
// divergent branch), written by lane 0.
extern "C" __global__ void vote(const int *in, unsigned int *ballot, int *all, int *any, unsigned int *low16)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int lane = threadIdx.x & 31;
    int pred = in[i] != 0;
    unsigned int b = __ballot_sync(FULL, pred);
    int a = __all_sync(FULL, pred);
    int y = __any_sync(FULL, pred);
    if (lane < 16) {
        unsigned int l = __ballot_sync(0x0000ffffu, pred);
        if (lane == 0)
            low16[i / 32] = l;
    }
    if (lane == 0) {
        ballot[i / 32] = b;
        all[i / 32] = a;
        any[i / 32] = y;
    }
}
