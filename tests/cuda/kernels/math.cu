// Math library functions, results written for host comparison.
// out[f * n + i] = f(x[i]) (pow: pow(x[i], y[i])) for f in the order below, which
// vcuda_tests::reference::{MATH_F32, MATH_F64} mirror together with each function's tolerance.
// Compiled without fast-math: these are CUDA's accurate software sequences.

extern "C" __global__ void math_f32(const float *x, const float *y, float *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    float v = x[i];
    out[0 * n + i] = sinf(v);
    out[1 * n + i] = cosf(v);
    out[2 * n + i] = expf(v);
    out[3 * n + i] = logf(v);
    out[4 * n + i] = powf(v, y[i]);
    out[5 * n + i] = sqrtf(v);
    out[6 * n + i] = tanhf(v);
    out[7 * n + i] = erff(v);
}

extern "C" __global__ void math_f64(const double *x, const double *y, double *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    double v = x[i];
    out[0 * n + i] = sin(v);
    out[1 * n + i] = exp(v);
    out[2 * n + i] = log(v);
    out[3 * n + i] = pow(v, y[i]);
    out[4 * n + i] = sqrt(v);
}
