// Runtime-API self-test for the vcuda shim: memory, kernels <<<>>>, streams, events,
// cudaMemcpyToSymbol, device properties and error strings. Prints PASS/FAIL; exit code 0 on PASS.
// Runs unmodified on a real GPU and through `vcuda exec`.
#include <cstdio>
#include <cstring>
#include <cuda_runtime.h>

static int failures = 0;
#define CHECK(call)                                                                   \
    do {                                                                              \
        cudaError_t e_ = (call);                                                      \
        if (e_ != cudaSuccess) {                                                      \
            printf("FAIL %s:%d %s -> %s (%s)\n", __FILE__, __LINE__, #call,          \
                   cudaGetErrorName(e_), cudaGetErrorString(e_));                     \
            failures++;                                                               \
        }                                                                             \
    } while (0)
#define EXPECT(cond)                                                                  \
    do {                                                                              \
        if (!(cond)) {                                                                \
            printf("FAIL %s:%d %s\n", __FILE__, __LINE__, #cond);                     \
            failures++;                                                               \
        }                                                                             \
    } while (0)

__constant__ float scale_c;
__device__ int counter_d;

__global__ void saxpy(int n, float a, const float *x, float *y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}

__global__ void scale_by_constant(int n, float *y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] *= scale_c;
    if (i == 0) atomicAdd(&counter_d, 1);
}

__global__ void block_sum(const int *in, int *out) {
    __shared__ int s[256];
    int t = threadIdx.x;
    s[t] = in[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (t < w) s[t] += s[t + w];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

int main() {
    int count = 0;
    CHECK(cudaGetDeviceCount(&count));
    EXPECT(count >= 1);
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, cc %d.%d, %d SMs, warp %d\n", prop.name, prop.major, prop.minor,
           prop.multiProcessorCount, prop.warpSize);
    EXPECT(prop.warpSize == 32);
    EXPECT(prop.maxThreadsPerBlock >= 256);
    int driver = 0, runtime = 0;
    CHECK(cudaDriverGetVersion(&driver));
    CHECK(cudaRuntimeGetVersion(&runtime));
    // CUDA minor-version compatibility: a runtime runs on any driver of its major version or newer.
    EXPECT(driver / 1000 >= runtime / 1000);

    const int n = 1 << 16;
    float *hx = new float[n], *hy = new float[n], *out = new float[n];
    for (int i = 0; i < n; i++) { hx[i] = (float)i; hy[i] = 1.0f; }
    float *dx, *dy;
    CHECK(cudaMalloc(&dx, n * sizeof(float)));
    CHECK(cudaMalloc(&dy, n * sizeof(float)));
    CHECK(cudaMemcpy(dx, hx, n * sizeof(float), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dy, hy, n * sizeof(float), cudaMemcpyHostToDevice));
    saxpy<<<(n + 255) / 256, 256>>>(n, 2.0f, dx, dy);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaMemcpy(out, dy, n * sizeof(float), cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int i = 0; i < n; i++) if (out[i] != 2.0f * i + 1.0f) bad++;
    EXPECT(bad == 0);

    // Symbols: __constant__ and __device__ variables.
    float s = 0.5f;
    int zero = 0, counter = -1;
    CHECK(cudaMemcpyToSymbol(scale_c, &s, sizeof(s)));
    CHECK(cudaMemcpyToSymbol(counter_d, &zero, sizeof(zero)));
    scale_by_constant<<<(n + 255) / 256, 256>>>(n, dy);
    CHECK(cudaMemcpyFromSymbol(&counter, counter_d, sizeof(counter)));
    EXPECT(counter == 1);
    CHECK(cudaMemcpy(out, dy, n * sizeof(float), cudaMemcpyDeviceToHost));
    bad = 0;
    for (int i = 0; i < n; i++) if (out[i] != (2.0f * i + 1.0f) * 0.5f) bad++;
    EXPECT(bad == 0);

    // Streams, async copies, memset, events.
    cudaStream_t st;
    CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaEvent_t start, stop;
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventCreate(&stop));
    int *din, *dout, *hin, *hout;
    const int blocks = 64;
    CHECK(cudaMallocHost(&hin, blocks * 256 * sizeof(int)));
    CHECK(cudaMallocHost(&hout, blocks * sizeof(int)));
    for (int i = 0; i < blocks * 256; i++) hin[i] = i % 7;
    CHECK(cudaMalloc(&din, blocks * 256 * sizeof(int)));
    CHECK(cudaMalloc(&dout, blocks * sizeof(int)));
    CHECK(cudaMemsetAsync(dout, 0xff, blocks * sizeof(int), st));
    CHECK(cudaEventRecord(start, st));
    CHECK(cudaMemcpyAsync(din, hin, blocks * 256 * sizeof(int), cudaMemcpyHostToDevice, st));
    block_sum<<<blocks, 256, 0, st>>>(din, dout);
    CHECK(cudaMemcpyAsync(hout, dout, blocks * sizeof(int), cudaMemcpyDeviceToHost, st));
    CHECK(cudaEventRecord(stop, st));
    CHECK(cudaStreamSynchronize(st));
    CHECK(cudaEventSynchronize(stop));
    float ms = -1.0f;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    EXPECT(ms >= 0.0f);
    bad = 0;
    for (int b = 0; b < blocks; b++) {
        int want = 0;
        for (int t = 0; t < 256; t++) want += (b * 256 + t) % 7;
        if (hout[b] != want) bad++;
    }
    EXPECT(bad == 0);
    EXPECT(cudaStreamQuery(st) == cudaSuccess);

    // 2D copies with pitched memory.
    size_t pitch = 0;
    float *d2;
    const int w = 100, h = 37;
    CHECK(cudaMallocPitch(&d2, &pitch, w * sizeof(float), h));
    EXPECT(pitch >= w * sizeof(float));
    CHECK(cudaMemcpy2D(d2, pitch, hx, w * sizeof(float), w * sizeof(float), h, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy2D(out, w * sizeof(float), d2, pitch, w * sizeof(float), h, cudaMemcpyDeviceToHost));
    EXPECT(memcmp(out, hx, w * h * sizeof(float)) == 0);

    // Device-to-device and memset.
    CHECK(cudaMemcpy(dy, dx, n * sizeof(float), cudaMemcpyDeviceToDevice));
    CHECK(cudaMemcpy(out, dy, n * sizeof(float), cudaMemcpyDefault));
    EXPECT(memcmp(out, hx, n * sizeof(float)) == 0);
    CHECK(cudaMemset(dy, 0, n * sizeof(float)));
    CHECK(cudaMemcpy(out, dy, sizeof(float) * 4, cudaMemcpyDeviceToHost));
    EXPECT(out[0] == 0.0f && out[3] == 0.0f);

    // Error strings and error reporting.
    EXPECT(strcmp(cudaGetErrorName(cudaErrorInvalidValue), "cudaErrorInvalidValue") == 0);
    EXPECT(strlen(cudaGetErrorString(cudaErrorMemoryAllocation)) > 0);
    void *huge = nullptr;
    cudaError_t e = cudaMalloc(&huge, (size_t)1 << 50);
    EXPECT(e == cudaErrorMemoryAllocation);
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    CHECK(cudaMemGetInfo(&free_b, &total_b));
    EXPECT(total_b > 0 && free_b <= total_b);

    CHECK(cudaEventDestroy(start));
    CHECK(cudaEventDestroy(stop));
    CHECK(cudaStreamDestroy(st));
    CHECK(cudaFree(dx));
    CHECK(cudaFree(dy));
    CHECK(cudaFree(d2));
    CHECK(cudaFree(din));
    CHECK(cudaFree(dout));
    CHECK(cudaFreeHost(hin));
    CHECK(cudaFreeHost(hout));
    delete[] hx; delete[] hy; delete[] out;
    if (failures == 0) {
        printf("PASS runtime_api\n");
        return 0;
    }
    printf("FAIL runtime_api (%d failures)\n", failures);
    return 1;
}
