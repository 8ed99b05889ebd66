// Speed workloads of the cuda-backend issue, self-timed, one JSON object per line:
//   launch loop (10k small kernels + one sync), H2D/D2H 256 MiB (pageable and pinned),
//   and a small MLP (forward + backward, a few hundred iterations) written with our own kernels.
// Run natively and through `vcuda exec --backend cuda`; tests/gpu/run.sh computes the ratios.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { \
    fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); exit(1); } } while (0)

static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

__global__ void tiny(float *x) { if (threadIdx.x == 0) x[blockIdx.x] += 1.0f; }

// y = relu(W x + b) for a batch; W is [out, in], x is [batch, in].
__global__ void dense_fwd(const float *W, const float *b, const float *x, float *y, int in, int out, int batch, int relu) {
    int o = blockIdx.x * blockDim.x + threadIdx.x, n = blockIdx.y;
    if (o >= out || n >= batch) return;
    float acc = b[o];
    for (int i = 0; i < in; i++) acc += W[o * in + i] * x[n * in + i];
    y[n * out + o] = relu ? fmaxf(acc, 0.0f) : acc;
}

// Gradient step for W and b from dy (relu mask applied by caller), x.
__global__ void dense_bwd_w(float *W, float *b, const float *x, const float *dy, int in, int out, int batch, float lr) {
    int o = blockIdx.x, i = threadIdx.x;
    if (o >= out) return;
    for (int k = i; k < in; k += blockDim.x) {
        float g = 0.0f;
        for (int n = 0; n < batch; n++) g += dy[n * out + o] * x[n * in + k];
        W[o * in + k] -= lr * g / batch;
    }
    if (i == 0) {
        float g = 0.0f;
        for (int n = 0; n < batch; n++) g += dy[n * out + o];
        b[o] -= lr * g / batch;
    }
}

__global__ void mse_grad(const float *y, const float *t, float *dy, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dy[i] = 2.0f * (y[i] - t[i]);
}

int main() {
    // Launch-heavy loop.
    float *dx;
    CHECK(cudaMalloc(&dx, 1024 * sizeof(float)));
    CHECK(cudaMemset(dx, 0, 1024 * sizeof(float)));
    tiny<<<1, 32>>>(dx);
    CHECK(cudaDeviceSynchronize());
    double t0 = now();
    for (int i = 0; i < 10000; i++) tiny<<<4, 32>>>(dx);
    CHECK(cudaDeviceSynchronize());
    double t1 = now();
    float h0;
    CHECK(cudaMemcpy(&h0, dx, sizeof(float), cudaMemcpyDeviceToHost));
    printf("{\"bench\":\"launch_loop_10k\",\"seconds\":%.6f,\"check\":%.0f}\n", t1 - t0, h0);

    // Copies.
    const size_t bytes = 256u << 20;
    char *dbuf;
    CHECK(cudaMalloc(&dbuf, bytes));
    std::vector<char> pageable(bytes, 1);
    char *pinned;
    CHECK(cudaMallocHost(&pinned, bytes));
    memset(pinned, 2, bytes);
    struct { const char *name; char *host; cudaMemcpyKind kind; } copies[] = {
        {"h2d_pageable_256M", pageable.data(), cudaMemcpyHostToDevice},
        {"d2h_pageable_256M", pageable.data(), cudaMemcpyDeviceToHost},
        {"h2d_pinned_256M", pinned, cudaMemcpyHostToDevice},
        {"d2h_pinned_256M", pinned, cudaMemcpyDeviceToHost},
    };
    for (auto &c : copies) {
        double best = 1e9;
        for (int rep = 0; rep < 5; rep++) {
            double a = now();
            if (c.kind == cudaMemcpyHostToDevice) CHECK(cudaMemcpy(dbuf, c.host, bytes, c.kind));
            else CHECK(cudaMemcpy(c.host, dbuf, bytes, c.kind));
            double b = now();
            if (b - a < best) best = b - a;
        }
        printf("{\"bench\":\"%s\",\"seconds\":%.6f,\"gbps\":%.2f}\n", c.name, best, bytes / best / 1e9);
    }

    // MLP: 256 -> 512 -> 10, batch 128, 300 iterations of forward + backward (last layer).
    const int in = 256, hid = 512, out = 10, batch = 128, iters = 300;
    std::vector<float> hW1(hid * in), hW2(out * hid), hx(batch * in), ht(batch * out);
    srand(1);
    for (auto &v : hW1) v = (rand() / (float)RAND_MAX - 0.5f) * 0.1f;
    for (auto &v : hW2) v = (rand() / (float)RAND_MAX - 0.5f) * 0.1f;
    for (auto &v : hx) v = rand() / (float)RAND_MAX;
    for (auto &v : ht) v = rand() / (float)RAND_MAX;
    float *W1, *b1, *W2, *b2, *x, *h, *y, *t, *dy;
    CHECK(cudaMalloc(&W1, hW1.size() * 4)); CHECK(cudaMalloc(&b1, hid * 4));
    CHECK(cudaMalloc(&W2, hW2.size() * 4)); CHECK(cudaMalloc(&b2, out * 4));
    CHECK(cudaMalloc(&x, hx.size() * 4)); CHECK(cudaMalloc(&t, ht.size() * 4));
    CHECK(cudaMalloc(&h, batch * hid * 4)); CHECK(cudaMalloc(&y, batch * out * 4));
    CHECK(cudaMalloc(&dy, batch * out * 4));
    CHECK(cudaMemcpy(W1, hW1.data(), hW1.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(W2, hW2.data(), hW2.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemset(b1, 0, hid * 4)); CHECK(cudaMemset(b2, 0, out * 4));
    CHECK(cudaMemcpy(x, hx.data(), hx.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(t, ht.data(), ht.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaDeviceSynchronize());
    double m0 = now();
    for (int it = 0; it < iters; it++) {
        dense_fwd<<<dim3((hid + 127) / 128, batch), 128>>>(W1, b1, x, h, in, hid, batch, 1);
        dense_fwd<<<dim3(1, batch), 32>>>(W2, b2, h, y, hid, out, batch, 0);
        mse_grad<<<(batch * out + 255) / 256, 256>>>(y, t, dy, batch * out);
        dense_bwd_w<<<out, 128>>>(W2, b2, h, dy, hid, out, batch, 0.01f);
    }
    CHECK(cudaDeviceSynchronize());
    double m1 = now();
    std::vector<float> hy(batch * out);
    CHECK(cudaMemcpy(hy.data(), y, hy.size() * 4, cudaMemcpyDeviceToHost));
    double loss = 0;
    for (int i = 0; i < batch * out; i++) loss += (hy[i] - ht[i]) * (hy[i] - ht[i]);
    printf("{\"bench\":\"mlp_300_iters\",\"seconds\":%.6f,\"loss\":%.6f}\n", m1 - m0, loss / (batch * out));
    return 0;
}
