// More runtime-API features through the vcuda shim: device printf, host callbacks,
// occupancy, function attributes, cooperative launch, streams waiting on events, host threads
// with their own streams, symbols, pointer attributes, registered host memory, 3D copies and
// managed memory reporting. Built twice by the tests: default stream legacy and
// `--default-stream per-thread`. Prints PASS/FAIL; exit code 0 on PASS.
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>
#include <cuda_runtime.h>

static int failures = 0;
#define CHECK(call)                                                                   \
    do {                                                                              \
        cudaError_t e_ = (call);                                                      \
        if (e_ != cudaSuccess) {                                                      \
            printf("FAIL %s:%d %s -> %s\n", __FILE__, __LINE__, #call, cudaGetErrorName(e_)); \
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

__device__ float table_d[64];

__global__ void hello(int tag) {
    if (threadIdx.x == 0) printf("hello from block %d tag %d\n", blockIdx.x, tag);
}

__global__ void fill(int *p, int n, int v) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] = v + i;
}

__global__ void use_table(float *out) {
    out[threadIdx.x] = table_d[threadIdx.x] * 2.0f;
}

static void CUDART_CB host_fn(void *data) { *(int *)data += 1; }
static void CUDART_CB stream_cb(cudaStream_t, cudaError_t status, void *data) {
    if (status == cudaSuccess) *(int *)data += 10;
}

static void worker(int id, int *ok) {
    *ok = 0;
    cudaStream_t s;
    if (cudaStreamCreate(&s) != cudaSuccess) return;
    const int n = 4096;
    int *d = nullptr;
    std::vector<int> h(n);
    if (cudaMalloc(&d, n * sizeof(int)) != cudaSuccess) return;
    for (int round = 0; round < 5; round++) {
        fill<<<n / 128, 128, 0, s>>>(d, n, id * 1000 + round);
        if (cudaMemcpyAsync(h.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost, s) != cudaSuccess) return;
        if (cudaStreamSynchronize(s) != cudaSuccess) return;
        for (int i = 0; i < n; i++) if (h[i] != id * 1000 + round + i) return;
    }
    cudaFree(d);
    cudaStreamDestroy(s);
    *ok = 1;
}

int main() {
    // Device printf reaches our stdout.
    hello<<<2, 32>>>(7);
    CHECK(cudaDeviceSynchronize());

    // Host functions and callbacks run in stream order.
    cudaStream_t s1, s2;
    CHECK(cudaStreamCreate(&s1));
    CHECK(cudaStreamCreateWithPriority(&s2, cudaStreamNonBlocking, -1));
    int counter = 0;
    CHECK(cudaLaunchHostFunc(s1, host_fn, &counter));
    CHECK(cudaStreamAddCallback(s1, stream_cb, &counter, 0));
    CHECK(cudaStreamSynchronize(s1));
    EXPECT(counter == 11);
    int lo = 0, hi = 0;
    CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
    EXPECT(hi <= lo);

    // Cross-stream dependency through an event.
    const int n = 1 << 14;
    int *a, *b;
    CHECK(cudaMalloc(&a, n * sizeof(int)));
    CHECK(cudaMalloc(&b, n * sizeof(int)));
    cudaEvent_t ev;
    CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    fill<<<n / 256, 256, 0, s1>>>(a, n, 5);
    CHECK(cudaEventRecord(ev, s1));
    CHECK(cudaStreamWaitEvent(s2, ev, 0));
    CHECK(cudaMemcpyAsync(b, a, n * sizeof(int), cudaMemcpyDeviceToDevice, s2));
    std::vector<int> hb(n);
    CHECK(cudaMemcpyAsync(hb.data(), b, n * sizeof(int), cudaMemcpyDeviceToHost, s2));
    CHECK(cudaStreamSynchronize(s2));
    EXPECT(hb[0] == 5 && hb[n - 1] == 5 + n - 1);

    // Per-thread default stream handle.
    CHECK(cudaMemsetAsync(a, 0, n * sizeof(int), cudaStreamPerThread));
    CHECK(cudaStreamSynchronize(cudaStreamPerThread));
    CHECK(cudaMemcpy(hb.data(), a, sizeof(int) * 4, cudaMemcpyDeviceToHost));
    EXPECT(hb[0] == 0 && hb[3] == 0);

    // Occupancy and function attributes.
    int blocks = 0, min_grid = 0, block = 0;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, fill, 256, 0));
    EXPECT(blocks >= 1);
    CHECK(cudaOccupancyMaxPotentialBlockSize(&min_grid, &block, fill, 0, 0));
    EXPECT(block >= 32 && min_grid >= 1);
    cudaFuncAttributes attr;
    CHECK(cudaFuncGetAttributes(&attr, fill));
    EXPECT(attr.maxThreadsPerBlock >= 256);

    // Cooperative launch.
    int *c;
    CHECK(cudaMalloc(&c, 256 * sizeof(int)));
    int nn = 256, v = 3;
    void *args[] = {&c, &nn, &v};
    CHECK(cudaLaunchCooperativeKernel((void *)fill, dim3(2), dim3(128), args, 0, s1));
    CHECK(cudaStreamSynchronize(s1));
    CHECK(cudaMemcpy(hb.data(), c, 256 * sizeof(int), cudaMemcpyDeviceToHost));
    EXPECT(hb[255] == 3 + 255);

    // Symbols by address.
    float tbl[64], out[64];
    for (int i = 0; i < 64; i++) tbl[i] = (float)i;
    float *tbl_ptr = nullptr;
    CHECK(cudaGetSymbolAddress((void **)&tbl_ptr, table_d));
    CHECK(cudaMemcpy(tbl_ptr, tbl, sizeof tbl, cudaMemcpyHostToDevice));
    float *dout;
    CHECK(cudaMalloc(&dout, sizeof out));
    use_table<<<1, 64>>>(dout);
    CHECK(cudaMemcpy(out, dout, sizeof out, cudaMemcpyDeviceToHost));
    EXPECT(out[10] == 20.0f && out[63] == 126.0f);

    // Pointer attributes and registered host memory.
    cudaPointerAttributes pa;
    CHECK(cudaPointerGetAttributes(&pa, a));
    EXPECT(pa.type == cudaMemoryTypeDevice);
    std::vector<int> reg(1024, 9);
    CHECK(cudaHostRegister(reg.data(), reg.size() * sizeof(int), cudaHostRegisterDefault));
    CHECK(cudaPointerGetAttributes(&pa, reg.data()));
    EXPECT(pa.type == cudaMemoryTypeHost);
    CHECK(cudaMemcpy(a, reg.data(), 1024 * sizeof(int), cudaMemcpyDefault));
    CHECK(cudaHostUnregister(reg.data()));
    int plain = 0;
    CHECK(cudaPointerGetAttributes(&pa, &plain));
    EXPECT(pa.type == cudaMemoryTypeUnregistered);

    // 3D copy through a pitched 3D allocation.
    cudaExtent ext = make_cudaExtent(16 * sizeof(float), 8, 4);
    cudaPitchedPtr pp;
    CHECK(cudaMalloc3D(&pp, ext));
    std::vector<float> src(16 * 8 * 4), dst(16 * 8 * 4, -1.0f);
    for (size_t i = 0; i < src.size(); i++) src[i] = (float)i;
    cudaMemcpy3DParms p = {};
    p.srcPtr = make_cudaPitchedPtr(src.data(), 16 * sizeof(float), 16, 8);
    p.dstPtr = pp;
    p.extent = ext;
    p.kind = cudaMemcpyHostToDevice;
    CHECK(cudaMemcpy3D(&p));
    cudaMemcpy3DParms q = {};
    q.srcPtr = pp;
    q.dstPtr = make_cudaPitchedPtr(dst.data(), 16 * sizeof(float), 16, 8);
    q.extent = ext;
    q.kind = cudaMemcpyDeviceToHost;
    CHECK(cudaMemcpy3D(&q));
    EXPECT(memcmp(src.data(), dst.data(), src.size() * sizeof(float)) == 0);

    // Host threads, each with its own stream.
    int ok[4] = {0, 0, 0, 0};
    std::vector<std::thread> ts;
    for (int i = 0; i < 4; i++) ts.emplace_back(worker, i + 1, &ok[i]);
    for (auto &t : ts) t.join();
    EXPECT(ok[0] && ok[1] && ok[2] && ok[3]);

    // Managed memory: either supported and coherent, or reported unsupported up front.
    int managed = -1;
    CHECK(cudaDeviceGetAttribute(&managed, cudaDevAttrManagedMemory, 0));
    if (!managed) {
        int *m = nullptr;
        EXPECT(cudaMallocManaged(&m, 64) != cudaSuccess);
        cudaGetLastError();
    } else {
        const int mn = 10000;
        int *m = nullptr;
        CHECK(cudaMallocManaged(&m, mn * sizeof(int)));
        for (int i = 0; i < mn; i++) m[i] = -i;
        fill<<<(mn + 255) / 256, 256>>>(m, mn / 2, 100);
        CHECK(cudaDeviceSynchronize());
        EXPECT(m[0] == 100 && m[mn / 2 - 1] == 100 + mn / 2 - 1 && m[mn / 2] == -(mn / 2));
        m[1] = 42;
        int back = 0;
        CHECK(cudaMemcpy(&back, m + 1, sizeof back, cudaMemcpyDefault));
        EXPECT(back == 42);
        fill<<<1, 1>>>(m + 2, 1, 7);
        CHECK(cudaStreamSynchronize(0));
        EXPECT(m[1] == 42 && m[2] == 7);
        cudaPointerAttributes ma;
        CHECK(cudaPointerGetAttributes(&ma, m));
        EXPECT(ma.type == cudaMemoryTypeManaged);
        CHECK(cudaFree(m));
    }

    CHECK(cudaGetLastError());
    CHECK(cudaEventDestroy(ev));
    CHECK(cudaStreamDestroy(s1));
    CHECK(cudaStreamDestroy(s2));
    CHECK(cudaFree(a));
    CHECK(cudaFree(b));
    CHECK(cudaFree(c));
    CHECK(cudaFree(dout));
    CHECK(cudaFree(pp.ptr));
    if (failures == 0) {
        printf("PASS runtime_more\n");
        return 0;
    }
    printf("FAIL runtime_more (%d failures)\n", failures);
    return 1;
}
