// Driver-API self-test for the vcuda shim: contexts (create, push/pop, current, primary),
// PTX modules (cuModuleLoadData and cuModuleLoad, cuModuleGetFunctionCount), cuLaunchKernel with kernelParams and with
// the `extra` buffer, cuLaunchKernelEx, libraries, globals, memsets, 2D/3D copies, streams,
// events, threads with their own contexts and error strings. Usage: driver_api <kernels.ptx>.
// Prints PASS/FAIL; exit code 0 on PASS.
#include <cuda.h>
#include <algorithm>
#include <string>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

static int failures = 0;
#define CHECK(call)                                                                   \
    do {                                                                              \
        CUresult r_ = (call);                                                         \
        if (r_ != CUDA_SUCCESS) {                                                     \
            const char *n_ = "?";                                                     \
            cuGetErrorName(r_, &n_);                                                  \
            printf("FAIL %s:%d %s -> %s\n", __FILE__, __LINE__, #call, n_);           \
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

struct Affine { float mul; float add; int n; };

static std::vector<char> read_file(const char *path) {
    std::vector<char> v;
    FILE *f = fopen(path, "rb");
    if (!f) return v;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) v.insert(v.end(), buf, buf + n);
    fclose(f);
    v.push_back(0);
    return v;
}

static void vadd_in_context(CUcontext ctx, CUfunction vadd, int n, int seed, int *ok) {
    *ok = 0;
    if (cuCtxSetCurrent(ctx) != CUDA_SUCCESS) return;
    std::vector<float> a(n), b(n), c(n);
    for (int i = 0; i < n; i++) { a[i] = i + seed; b[i] = 2 * i; }
    CUdeviceptr da, db, dc;
    if (cuMemAlloc(&da, n * 4) || cuMemAlloc(&db, n * 4) || cuMemAlloc(&dc, n * 4)) return;
    cuMemcpyHtoD(da, a.data(), n * 4);
    cuMemcpyHtoD(db, b.data(), n * 4);
    void *args[] = {&da, &db, &dc, &n};
    if (cuLaunchKernel(vadd, (n + 127) / 128, 1, 1, 128, 1, 1, 0, 0, args, nullptr)) return;
    if (cuMemcpyDtoH(c.data(), dc, n * 4)) return;
    for (int i = 0; i < n; i++) if (c[i] != a[i] + b[i]) return;
    cuMemFree(da); cuMemFree(db); cuMemFree(dc);
    *ok = 1;
}

int main(int argc, char **argv) {
    if (argc < 2) { printf("usage: driver_api <kernels.ptx>\n"); return 2; }
    std::vector<char> ptx = read_file(argv[1]);
    EXPECT(ptx.size() > 1);

    CHECK(cuInit(0));
    int version = 0, count = 0;
    CHECK(cuDriverGetVersion(&version));
    EXPECT(version >= 12000);
    CHECK(cuDeviceGetCount(&count));
    EXPECT(count >= 1);
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    char name[128];
    CHECK(cuDeviceGetName(name, sizeof name, dev));
    int major = 0, minor = 0;
    CHECK(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
    CHECK(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
    size_t total = 0;
    CHECK(cuDeviceTotalMem(&total, dev));
    printf("device: %s cc %d.%d, %zu MiB, driver %d\n", name, major, minor, total >> 20, version);

    // Contexts: create (pushes), current, push/pop.
    CUcontext ctx, ctx2, cur;
    CHECK(cuCtxCreate(&ctx, nullptr, 0, dev));
    CHECK(cuCtxGetCurrent(&cur));
    EXPECT(cur == ctx);
    // A zeroed CUctxCreateParams is a plain context (cuda-samples pass one); an SM-count
    // affinity is refused as the driver does on a device without partitions.
    CUctxCreateParams params = {};
    CHECK(cuCtxCreate(&ctx2, &params, 0, dev));
    CHECK(cuCtxGetCurrent(&cur));
    EXPECT(cur == ctx2);
    {
        CUexecAffinityParam aff = {};
        aff.type = CU_EXEC_AFFINITY_TYPE_SM_COUNT;
        aff.param.smCount.val = 1;
        CUctxCreateParams with_aff = {};
        with_aff.execAffinityParams = &aff;
        with_aff.numExecAffinityParams = 1;
        CUcontext none = nullptr;
        EXPECT(cuCtxCreate(&none, &with_aff, 0, dev) == CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY);
        CHECK(cuCtxGetCurrent(&cur));
        EXPECT(cur == ctx2);
    }
    CHECK(cuCtxPopCurrent(&cur));
    EXPECT(cur == ctx2);
    CHECK(cuCtxGetCurrent(&cur));
    EXPECT(cur == ctx);
    CUdevice cdev = -1;
    CHECK(cuCtxGetDevice(&cdev));
    EXPECT(cdev == dev);

    // Modules from PTX, in memory and from a file.
    CUmodule mod, mod_file;
    CHECK(cuModuleLoadData(&mod, ptx.data()));
    CHECK(cuModuleLoad(&mod_file, argv[1]));
    CUfunction vadd, affine, count_hits, missing;
    CHECK(cuModuleGetFunction(&vadd, mod, "vadd"));
    CHECK(cuModuleGetFunction(&affine, mod, "affine"));
    CHECK(cuModuleGetFunction(&count_hits, mod_file, "count_hits"));
    EXPECT(cuModuleGetFunction(&missing, mod, "no_such_kernel") == CUDA_ERROR_NOT_FOUND);
    // driver_kernels.cu defines four kernels.
    unsigned int nfuncs = 0;
    CHECK(cuModuleGetFunctionCount(&nfuncs, mod));
    EXPECT(nfuncs == 4);
    EXPECT(cuModuleGetFunctionCount(nullptr, mod) == CUDA_ERROR_INVALID_VALUE);
    // Enumeration: every kernel once, by name; at most as many handles as asked for.
    {
        std::vector<CUfunction> fns(nfuncs + 2, nullptr);
        CHECK(cuModuleEnumerateFunctions(fns.data(), nfuncs + 2, mod));
        std::vector<std::string> names;
        for (unsigned i = 0; i < nfuncs; i++) {
            const char *nm = nullptr;
            CHECK(cuFuncGetName(&nm, fns[i]));
            names.push_back(nm);
        }
        std::sort(names.begin(), names.end());
        EXPECT((names == std::vector<std::string>{"affine", "count_hits", "empty", "vadd"}));
        EXPECT(fns[nfuncs] == nullptr);
        CUfunction one[1] = {nullptr};
        CHECK(cuModuleEnumerateFunctions(one, 1, mod));
        EXPECT(one[0] != nullptr);
        EXPECT(cuModuleEnumerateFunctions(nullptr, 1, mod) == CUDA_ERROR_INVALID_VALUE);
    }
    // Parameter layout: vadd(const float *, const float *, float *, int).
    {
        size_t off = 0, sz = 0;
        CHECK(cuFuncGetParamInfo(vadd, 3, &off, &sz));
        EXPECT(off == 24 && sz == 4);
        CHECK(cuFuncGetParamInfo(vadd, 0, &off, &sz));
        EXPECT(off == 0 && sz == 8);
        EXPECT(cuFuncGetParamInfo(vadd, 4, &off, &sz) == CUDA_ERROR_INVALID_VALUE);
    }
    int max_threads = 0;
    CHECK(cuFuncGetAttribute(&max_threads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, vadd));
    EXPECT(max_threads >= 128);

    // kernelParams launch.
    int ok = 0;
    vadd_in_context(ctx, vadd, 1000, 3, &ok);
    EXPECT(ok == 1);

    // extra-buffer launch with a struct parameter.
    const int n = 777;
    std::vector<float> x(n);
    for (int i = 0; i < n; i++) x[i] = (float)i;
    CUdeviceptr dx;
    CHECK(cuMemAlloc(&dx, n * sizeof(float)));
    CHECK(cuMemcpyHtoD(dx, x.data(), n * sizeof(float)));
    struct { Affine p; CUdeviceptr x; } buf = {{2.0f, 1.0f, n}, dx};
    size_t buf_size = sizeof buf;
    void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &buf, CU_LAUNCH_PARAM_BUFFER_SIZE, &buf_size,
                     CU_LAUNCH_PARAM_END};
    CHECK(cuLaunchKernel(affine, (n + 63) / 64, 1, 1, 64, 1, 1, 0, 0, nullptr, extra));
    // Configurations the device cannot run are refused at the call: too many threads, a zero
    // or too large dimension, more dynamic shared memory than the function may have.
    int dev_smem = 0;
    CHECK(cuDeviceGetAttribute(&dev_smem, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, dev));
    EXPECT(cuLaunchKernel(affine, 1, 1, 1, 2048, 1, 1, 0, 0, nullptr, extra) == CUDA_ERROR_INVALID_VALUE);
    EXPECT(cuLaunchKernel(affine, 0, 1, 1, 64, 1, 1, 0, 0, nullptr, extra) == CUDA_ERROR_INVALID_VALUE);
    EXPECT(cuLaunchKernel(affine, 1, 1, 1, 1, 1, 65, 0, 0, nullptr, extra) == CUDA_ERROR_INVALID_VALUE);
    EXPECT(cuLaunchKernel(affine, 1, 70000, 1, 64, 1, 1, 0, 0, nullptr, extra) == CUDA_ERROR_INVALID_VALUE);
    EXPECT(cuLaunchKernel(affine, 1, 1, 1, 64, 1, 1, dev_smem + 1, 0, nullptr, extra) ==
           CUDA_ERROR_INVALID_VALUE);
    // cuLaunchKernelEx on a stream.
    CUstream stream;
    CHECK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
    Affine p2 = {0.5f, 0.0f, n};
    void *args2[] = {&p2, &dx};
    CUlaunchConfig cfg = {};
    cfg.gridDimX = (n + 63) / 64; cfg.gridDimY = 1; cfg.gridDimZ = 1;
    cfg.blockDimX = 64; cfg.blockDimY = 1; cfg.blockDimZ = 1;
    cfg.hStream = stream;
    CHECK(cuLaunchKernelEx(&cfg, affine, args2, nullptr));
    CHECK(cuStreamSynchronize(stream));
    std::vector<float> y(n);
    CHECK(cuMemcpyDtoH(y.data(), dx, n * sizeof(float)));
    int bad = 0;
    for (int i = 0; i < n; i++) if (y[i] != (i * 2.0f + 1.0f) * 0.5f) bad++;
    EXPECT(bad == 0);

    // Mixed-size scalar parameters and a __device__ global.
    CUdeviceptr hits, dout;
    size_t hits_size = 0;
    CHECK(cuModuleGetGlobal(&hits, &hits_size, mod_file, "hits"));
    EXPECT(hits_size == sizeof(int));
    CHECK(cuMemsetD32(hits, 0, 1));
    CHECK(cuMemAlloc(&dout, 8));
    char c = 3; short s = 4; double d = 5.0;
    void *args3[] = {&c, &s, &d, &dout};
    CHECK(cuLaunchKernel(count_hits, 4, 1, 1, 32, 1, 1, 0, 0, args3, nullptr));
    int h = 0;
    unsigned long long sum = 0;
    CHECK(cuMemcpyDtoH(&h, hits, sizeof h));
    CHECK(cuMemcpyDtoH(&sum, dout, sizeof sum));
    EXPECT(h == 128);
    EXPECT(sum == 12);

    // Memsets and 2D/3D copies.
    CUdeviceptr m;
    CHECK(cuMemAlloc(&m, 4096));
    CHECK(cuMemsetD8(m, 0xab, 4096));
    CHECK(cuMemsetD16(m + 1024, 0x1234, 16));
    CHECK(cuMemsetD2D32(m + 2048, 256, 0xdeadbeef, 8, 4));
    unsigned char hb[4096];
    CHECK(cuMemcpyDtoH(hb, m, 4096));
    EXPECT(hb[0] == 0xab && hb[1023] == 0xab && hb[1024] == 0x34 && hb[1025] == 0x12);
    EXPECT(hb[2048] == 0xef && hb[2048 + 256 * 3 + 31] == 0xde && hb[2048 + 32] == 0xab);
    unsigned char src[8 * 10], back[8 * 10];
    for (int i = 0; i < 80; i++) src[i] = (unsigned char)i;
    CUDA_MEMCPY2D c2 = {};
    c2.srcMemoryType = CU_MEMORYTYPE_HOST; c2.srcHost = src; c2.srcPitch = 8;
    c2.dstMemoryType = CU_MEMORYTYPE_DEVICE; c2.dstDevice = m; c2.dstPitch = 64;
    c2.WidthInBytes = 8; c2.Height = 10;
    CHECK(cuMemcpy2D(&c2));
    CUDA_MEMCPY3D c3 = {};
    c3.srcMemoryType = CU_MEMORYTYPE_DEVICE; c3.srcDevice = m; c3.srcPitch = 64; c3.srcHeight = 5;
    c3.dstMemoryType = CU_MEMORYTYPE_HOST; c3.dstHost = back; c3.dstPitch = 8; c3.dstHeight = 5;
    c3.WidthInBytes = 8; c3.Height = 5; c3.Depth = 2;
    CHECK(cuMemcpy3D(&c3));
    EXPECT(memcmp(src, back, 80) == 0);

    // Events.
    CUevent e0, e1;
    CHECK(cuEventCreate(&e0, CU_EVENT_DEFAULT));
    CHECK(cuEventCreate(&e1, CU_EVENT_DEFAULT));
    CHECK(cuEventRecord(e0, stream));
    CHECK(cuLaunchKernel(affine, (n + 63) / 64, 1, 1, 64, 1, 1, 0, stream, args2, nullptr));
    CHECK(cuEventRecord(e1, stream));
    CHECK(cuEventSynchronize(e1));
    float ms = -1;
    CHECK(cuEventElapsedTime(&ms, e0, e1));
    EXPECT(ms >= 0);
    EXPECT(cuEventQuery(e1) == CUDA_SUCCESS);

    // Libraries and kernels (context-independent loading).
    CUlibrary lib;
    CUkernel kern;
    CUfunction kfunc;
    CHECK(cuLibraryLoadData(&lib, ptx.data(), nullptr, nullptr, 0, nullptr, nullptr, 0));
    CHECK(cuLibraryGetKernel(&kern, lib, "vadd"));
    CHECK(cuKernelGetFunction(&kfunc, kern));
    {
        unsigned int nk = 0;
        CHECK(cuLibraryGetKernelCount(&nk, lib));
        EXPECT(nk == 4);
        std::vector<CUkernel> ks(nk);
        CHECK(cuLibraryEnumerateKernels(ks.data(), nk, lib));
        int seen_vadd = 0;
        for (CUkernel k : ks) {
            const char *nm = nullptr;
            CHECK(cuKernelGetName(&nm, k));
            seen_vadd += strcmp(nm, "vadd") == 0;
        }
        EXPECT(seen_vadd == 1);
        size_t off = 0, sz = 0;
        CHECK(cuKernelGetParamInfo(kern, 2, &off, &sz));
        EXPECT(off == 16 && sz == 8);
    }
    vadd_in_context(ctx, kfunc, 300, 7, &ok);
    EXPECT(ok == 1);

    // The driver's linker: a kernel calling an extern function, and the module defining it.
    {
        const char *ptx_a =
            ".version 8.0\n.target sm_80\n.address_size 64\n"
            ".extern .func (.param .b32 r) twice(.param .b32 x);\n"
            ".visible .entry use_twice(.param .u64 out)\n{\n"
            "  .reg .b32 %r<3>;\n  .reg .b64 %rd<2>;\n"
            "  ld.param.u64 %rd1, [out];\n  cvta.to.global.u64 %rd1, %rd1;\n  mov.u32 %r1, 21;\n"
            "  {\n  .param .b32 px;\n  .param .b32 pr;\n  st.param.b32 [px], %r1;\n"
            "  call (pr), twice, (px);\n  ld.param.b32 %r2, [pr];\n  }\n"
            "  st.global.u32 [%rd1], %r2;\n  ret;\n}\n";
        const char *ptx_b =
            ".version 7.8\n.target sm_80\n.address_size 64\n"
            ".visible .func (.param .b32 r) twice(.param .b32 x)\n{\n"
            "  .reg .b32 %r<3>;\n  ld.param.b32 %r1, [x];\n  add.u32 %r2, %r1, %r1;\n"
            "  st.param.b32 [r], %r2;\n  ret;\n}\n";
        CUlinkState link;
        CHECK(cuLinkCreate(0, nullptr, nullptr, &link));
        CHECK(cuLinkAddData(link, CU_JIT_INPUT_PTX, (void *)ptx_a, strlen(ptx_a) + 1, "a.ptx", 0, nullptr,
                            nullptr));
        CHECK(cuLinkAddData(link, CU_JIT_INPUT_PTX, (void *)ptx_b, strlen(ptx_b) + 1, "b.ptx", 0, nullptr,
                            nullptr));
        EXPECT(cuLinkAddFile(link, CU_JIT_INPUT_PTX, "/no/such/file.ptx", 0, nullptr, nullptr) ==
               CUDA_ERROR_FILE_NOT_FOUND);
        void *image = nullptr;
        size_t image_size = 0;
        CHECK(cuLinkComplete(link, &image, &image_size));
        EXPECT(image != nullptr && image_size > 0);
        CUmodule linked;
        CHECK(cuModuleLoadData(&linked, image));
        CHECK(cuLinkDestroy(link));
        EXPECT(cuLinkDestroy(link) == CUDA_ERROR_INVALID_HANDLE);
        CUfunction use_twice;
        CHECK(cuModuleGetFunction(&use_twice, linked, "use_twice"));
        CUdeviceptr dres;
        CHECK(cuMemAlloc(&dres, 4));
        void *largs[] = {&dres};
        CHECK(cuLaunchKernel(use_twice, 1, 1, 1, 1, 1, 1, 0, 0, largs, nullptr));
        unsigned int res = 0;
        CHECK(cuMemcpyDtoH(&res, dres, 4));
        EXPECT(res == 42);
        CHECK(cuMemFree(dres));
        CHECK(cuModuleUnload(linked));
    }

    // Threads with their own contexts at the same time.
    int ok_a = 0, ok_b = 0;
    std::thread ta(vadd_in_context, ctx, vadd, 5000, 1, &ok_a);
    std::thread tb(vadd_in_context, ctx2, vadd, 3000, 2, &ok_b);
    ta.join();
    tb.join();
    EXPECT(ok_a == 1);
    // ctx2 has no module loaded: its launch must fail cleanly.
    EXPECT(ok_b == 0);

    // Primary context.
    CUcontext primary;
    CHECK(cuDevicePrimaryCtxRetain(&primary, dev));
    unsigned flags = 0; int active = 0;
    CHECK(cuDevicePrimaryCtxGetState(dev, &flags, &active));
    EXPECT(active == 1);
    CHECK(cuDevicePrimaryCtxRelease(dev));

    // Errors.
    const char *ename = nullptr, *estr = nullptr;
    CHECK(cuGetErrorName(CUDA_ERROR_INVALID_VALUE, &ename));
    CHECK(cuGetErrorString(CUDA_ERROR_OUT_OF_MEMORY, &estr));
    EXPECT(ename && strcmp(ename, "CUDA_ERROR_INVALID_VALUE") == 0);
    EXPECT(estr && strlen(estr) > 0);
    CUdeviceptr huge;
    EXPECT(cuMemAlloc(&huge, (size_t)1 << 50) == CUDA_ERROR_OUT_OF_MEMORY);
    EXPECT(cuCtxSetCurrent((CUcontext)0x1234) != CUDA_SUCCESS);

    CHECK(cuLibraryUnload(lib));
    CHECK(cuModuleUnload(mod));
    CHECK(cuModuleUnload(mod_file));
    CHECK(cuStreamDestroy(stream));
    CHECK(cuEventDestroy(e0));
    CHECK(cuEventDestroy(e1));
    CHECK(cuMemFree(dx));
    CHECK(cuMemFree(m));
    CHECK(cuMemFree(dout));
    CHECK(cuCtxSynchronize());
    CHECK(cuCtxDestroy(ctx2));
    CHECK(cuCtxDestroy(ctx));
    if (failures == 0) {
        printf("PASS driver_api\n");
        return 0;
    }
    printf("FAIL driver_api (%d failures)\n", failures);
    return 1;
}
