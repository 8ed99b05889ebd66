// A client that holds device memory and keeps calling the executor until it is killed
// (for the "one client dies mid-call" test). Prints READY once its memory is allocated.
#include <cstdio>
#include <cuda_runtime.h>

__global__ void touch(int *p, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] += 1;
}

int main() {
    const int n = 16 << 20;  // 64 MiB of ints
    int *d = nullptr;
    if (cudaMalloc(&d, n * sizeof(int)) != cudaSuccess || cudaMemset(d, 0, n * sizeof(int)) != cudaSuccess) {
        printf("FAIL hog: allocation\n");
        return 1;
    }
    cudaDeviceSynchronize();
    printf("READY\n");
    fflush(stdout);
    int v = 0;
    for (;;) {
        touch<<<4, 256>>>(d, 1024);
        cudaMemcpy(&v, d, sizeof v, cudaMemcpyDeviceToHost);
    }
}
