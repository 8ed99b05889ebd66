// Shim micro-benchmarks through the driver API: synchronous null round trip
// (cuCtxSynchronize on an idle context, p50/p99), client-side cost of an async launch, and
// host<->device copies of 1-256 MiB against a host memcpy of the same size in the same run.
// Usage: shim_bench <kernels.ptx>. Prints a markdown table.
#include <cuda.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define CHECK(call)                                                        \
    do {                                                                   \
        CUresult r_ = (call);                                              \
        if (r_ != CUDA_SUCCESS) {                                          \
            printf("FAIL %s:%d %s -> %d\n", __FILE__, __LINE__, #call, r_); \
            exit(1);                                                       \
        }                                                                  \
    } while (0)

static double now_us() {
    using namespace std::chrono;
    return duration<double, std::micro>(steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 2;
    std::vector<char> ptx(1 << 20);
    size_t n = fread(ptx.data(), 1, ptx.size() - 1, f);
    ptx[n] = 0;
    fclose(f);

    CHECK(cuInit(0));
    CUdevice dev;
    CUcontext ctx;
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuCtxCreate(&ctx, nullptr, 0, dev));
    CUmodule mod;
    CUfunction empty;
    CHECK(cuModuleLoadData(&mod, ptx.data()));
    CHECK(cuModuleGetFunction(&empty, mod, "empty"));

    // Null round trip.
    std::vector<double> rt;
    for (int i = 0; i < 20000; i++) {
        double t0 = now_us();
        CHECK(cuCtxSynchronize());
        rt.push_back(now_us() - t0);
    }
    std::sort(rt.begin(), rt.end());
    printf("| null round trip (cuCtxSynchronize) | p50 %.1f us | p99 %.1f us |\n",
           rt[rt.size() / 2], rt[rt.size() * 99 / 100]);

    // Client cost of an async launch: enqueue time only (batches small enough not to block
    // on a full socket), then drain.
    std::vector<double> per;
    for (int rep = 0; rep < 20; rep++) {
        const int batch = 500;
        double t0 = now_us();
        for (int i = 0; i < batch; i++)
            CHECK(cuLaunchKernel(empty, 1, 1, 1, 1, 1, 1, 0, 0, nullptr, nullptr));
        per.push_back((now_us() - t0) / batch);
        CHECK(cuCtxSynchronize());
    }
    std::sort(per.begin(), per.end());
    double t0 = now_us();
    const int many = 20000;
    for (int i = 0; i < many; i++)
        CHECK(cuLaunchKernel(empty, 1, 1, 1, 1, 1, 1, 0, 0, nullptr, nullptr));
    CHECK(cuCtxSynchronize());
    double sustained = (now_us() - t0) / many;
    printf("| async launch, client cost | median %.2f us/launch | sustained (incl. execution) %.2f us/launch |\n",
           per[per.size() / 2], sustained);

    // Copies.
    printf("| size | H2D GB/s | D2H GB/s | host memcpy GB/s | H2D/memcpy | D2H/memcpy |\n");
    printf("|---|---|---|---|---|---|\n");
    for (size_t mib : {1, 4, 16, 64, 256}) {
        size_t bytes = mib << 20;
        char *h = (char *)malloc(bytes), *h2 = (char *)malloc(bytes);
        memset(h, 1, bytes);
        memset(h2, 2, bytes);
        CUdeviceptr d;
        CHECK(cuMemAlloc(&d, bytes));
        int reps = mib >= 64 ? 3 : 10;
        auto best = [&](auto fn) {
            double b = 1e30;
            for (int r = 0; r < reps; r++) {
                double s = now_us();
                fn();
                b = std::min(b, now_us() - s);
            }
            return bytes / b / 1e3;  // GB/s
        };
        double h2d = best([&] { CHECK(cuMemcpyHtoD(d, h, bytes)); });
        double d2h = best([&] { CHECK(cuMemcpyDtoH(h2, d, bytes)); });
        double mc = best([&] { memcpy(h2, h, bytes); __asm__ volatile("" ::: "memory"); });
        printf("| %zu MiB | %.2f | %.2f | %.2f | %.0f%% | %.0f%% |\n", mib, h2d, d2h, mc,
               100 * h2d / mc, 100 * d2h / mc);
        CHECK(cuMemFree(d));
        free(h);
        free(h2);
    }
    CHECK(cuCtxDestroy(ctx));
    printf("PASS shim_bench\n");
    return 0;
}
