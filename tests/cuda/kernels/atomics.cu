// Global-memory atomics, one kernel per family. Every kernel takes `data` (n ints) and works on
// element i = global thread id < n. Reference: vcuda_tests::reference::atomics.

// out[0] += data[i] (int), out_f[0] += 1.0f, out_d[0] += data[i] (double).
extern "C" __global__ void atomic_add(const int *data, int n, int *out, float *out_f, double *out_d)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    atomicAdd(out, data[i]);
    atomicAdd(out_f, 1.0f);
    atomicAdd(out_d, (double)data[i]);
}

// minmax[0] = min(data), minmax[1] = max(data); start them at INT_MAX / INT_MIN.
extern "C" __global__ void atomic_minmax(const int *data, int n, int *minmax)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    atomicMin(&minmax[0], data[i]);
    atomicMax(&minmax[1], data[i]);
}

// *slot ends up holding one of the thread ids; old[i] receives what each exchange replaced, so
// {initial *slot} ∪ {0..n} == old ∪ {final *slot} as multisets.
extern "C" __global__ void atomic_exch(int n, int *slot, int *old)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    old[i] = atomicExch(slot, i);
}

// atomicInc wraps at `limit`: after n increments from 0 the counter is n % (limit + 1), and the
// returned values are a permutation of the sequence 0, 1, ..., limit, 0, 1, ...
extern "C" __global__ void atomic_inc(int n, unsigned int limit, unsigned int *counter, unsigned int *ret)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    ret[i] = atomicInc(counter, limit);
}

// A compare-and-swap loop: *sum_sq (64-bit) += data[i]^2.
extern "C" __global__ void atomic_cas_sum_sq(const int *data, int n, unsigned long long *sum_sq)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    unsigned long long add = (unsigned long long)((long long)data[i] * data[i]);
    unsigned long long seen = *sum_sq;
    unsigned long long assumed;
    do {
        assumed = seen;
        seen = atomicCAS(sum_sq, assumed, assumed + add);
    } while (seen != assumed);
}

// hist[data[i] & 15] += 1 (contended shared-memory atomics, then one global add per bin).
extern "C" __global__ void histogram16(const int *data, int n, unsigned int *hist)
{
    __shared__ unsigned int local[16];
    if (threadIdx.x < 16)
        local[threadIdx.x] = 0;
    __syncthreads();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        atomicAdd(&local[data[i] & 15], 1u);
    __syncthreads();
    if (threadIdx.x < 16)
        atomicAdd(&hist[threadIdx.x], local[threadIdx.x]);
}
