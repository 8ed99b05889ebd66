// Kernels of driver_api.cu, compiled to PTX by the test (extern "C": unmangled names).
extern "C" __global__ void vadd(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

struct Affine { float mul; float add; int n; };

extern "C" __global__ void affine(Affine p, float *x) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p.n) x[i] = x[i] * p.mul + p.add;
}

__device__ int hits;

extern "C" __global__ void count_hits(char c, short s, double d, unsigned long long *out) {
    atomicAdd(&hits, 1);
    if (threadIdx.x == 0 && blockIdx.x == 0) out[0] = (unsigned long long)(c + s + d);
}

extern "C" __global__ void empty() {}
