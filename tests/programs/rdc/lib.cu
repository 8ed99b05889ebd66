// The other translation unit of main.cu (nvcc -rdc=true).
__device__ int counter = 0;

__device__ int twice(int x) { return 2 * x; }

int read_counter() {
    int c = -1;
    cudaMemcpyFromSymbol(&c, counter, sizeof c);
    return c;
}
