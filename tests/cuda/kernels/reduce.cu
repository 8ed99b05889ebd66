// Multi-block reductions through shared memory and __syncthreads.
// Launch with blockDim.x == REDUCE_BLOCK (256) and any grid.
// Each thread first accumulates a grid-stride slice, then the block reduces its 256 values as a
// tree (stride 128, 64, ..., 1) and thread 0 writes the block's partial sum.
// Reference: vcuda_tests::reference::{reduce_f32_tree, reduce_i32}.

#define REDUCE_BLOCK 256

extern "C" __global__ void reduce_sum_f32(const float *in, float *partial, unsigned int n)
{
    __shared__ float s[REDUCE_BLOCK];
    unsigned int tid = threadIdx.x;
    float acc = 0.0f;
    for (unsigned int i = blockIdx.x * blockDim.x + tid; i < n; i += gridDim.x * blockDim.x)
        acc += in[i];
    s[tid] = acc;
    __syncthreads();
    for (unsigned int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (tid < stride)
            s[tid] += s[tid + stride];
        __syncthreads();
    }
    if (tid == 0)
        partial[blockIdx.x] = s[0];
}

// Integer sum: per-block tree, then one atomicAdd per block into *total.
extern "C" __global__ void reduce_sum_i32(const int *in, int *total, unsigned int n)
{
    __shared__ int s[REDUCE_BLOCK];
    unsigned int tid = threadIdx.x;
    int acc = 0;
    for (unsigned int i = blockIdx.x * blockDim.x + tid; i < n; i += gridDim.x * blockDim.x)
        acc += in[i];
    s[tid] = acc;
    __syncthreads();
    for (unsigned int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (tid < stride)
            s[tid] += s[tid + stride];
        __syncthreads();
    }
    if (tid == 0)
        atomicAdd(total, s[0]);
}
