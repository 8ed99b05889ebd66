// Kernels that fail on purpose.

// Writes p[offset]; with an offset far outside any allocation this must end the context with
// CUDA_ERROR_ILLEGAL_ADDRESS (never crash the executor).
extern "C" __global__ void write_oob(int *p, long long offset)
{
    if (threadIdx.x == 0 && blockIdx.x == 0)
        p[offset] = 0x0bad;
}

// Spins until *flag != 0, which nothing sets: the launch timeout must stop it
// (CUDA_ERROR_LAUNCH_TIMEOUT). The volatile read keeps the loop from being optimised away.
extern "C" __global__ void spin_forever(volatile int *flag, int *iterations)
{
    int k = 0;
    while (*flag == 0)
        ++k;
    iterations[threadIdx.x] = k;
}
