// Relocatable device code (nvcc -rdc=true) across two translation units: a kernel here calls a
// device function and updates a __device__ variable defined in lib.cu; the host reads the
// variable back through cudaMemcpyFromSymbol in lib.cu. Prints PASS/FAIL; exit code 0 on PASS.
#include <cstdio>

extern __device__ int twice(int);
extern __device__ int counter;
int read_counter();

__global__ void doubled(int *out) {
    out[blockIdx.x * blockDim.x + threadIdx.x] = twice(blockIdx.x * blockDim.x + threadIdx.x);
    atomicAdd(&counter, 1);
}

int main() {
    const int n = 256;
    int *d = nullptr;
    int h[n] = {0};
    if (cudaMalloc(&d, sizeof h) != cudaSuccess) {
        printf("FAIL rdc: cudaMalloc\n");
        return 1;
    }
    doubled<<<4, n / 4>>>(d);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {
        printf("FAIL rdc: %s\n", cudaGetErrorString(e));
        return 1;
    }
    for (int i = 0; i < n; i++) {
        if (h[i] != 2 * i) {
            printf("FAIL rdc: out[%d] = %d, want %d\n", i, h[i], 2 * i);
            return 1;
        }
    }
    int c = read_counter();
    if (c != n) {
        printf("FAIL rdc: counter %d, want %d\n", c, n);
        return 1;
    }
    printf("PASS rdc\n");
    return 0;
}
