// __constant__ memory: a 9-tap FIR filter whose coefficients the host writes (through
// cuModuleGetGlobal) and a 5-tap one with initialised coefficients.
// out[i] = sum_k coeffs[k] * in[i + k - TAPS/2], reading 0 outside [0, n).
// Reference: vcuda_tests::reference::fir.

#define TAPS 9
#define FIXED_TAPS 5

__constant__ float coeffs[TAPS];
__constant__ float fixed_coeffs[FIXED_TAPS] = {0.0625f, 0.25f, 0.375f, 0.25f, 0.0625f};

extern "C" __global__ void fir(const float *in, float *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    float acc = 0.0f;
    for (int k = 0; k < TAPS; ++k) {
        int j = i + k - TAPS / 2;
        float x = (j >= 0 && j < n) ? in[j] : 0.0f;
        acc += coeffs[k] * x;
    }
    out[i] = acc;
}

extern "C" __global__ void fir_fixed(const float *in, float *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    float acc = 0.0f;
    for (int k = 0; k < FIXED_TAPS; ++k) {
        int j = i + k - FIXED_TAPS / 2;
        float x = (j >= 0 && j < n) ? in[j] : 0.0f;
        acc += fixed_coeffs[k] * x;
    }
    out[i] = acc;
}
