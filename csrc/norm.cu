// RMSNorm fused with the residual add: x += delta; out = bf16(x / rms(x) * w). One CTA per row.
// CPU twin: backend::cpu::rms_norm_row.
#include "common.cuh"

extern "C" __global__ void add_rms_norm(const NormParams p) {
    __shared__ float scratch[32];
    int r = blockIdx.x;
    float* x = p.x + (size_t)r * p.cols;
    const float* dl = p.delta ? p.delta + (size_t)r * p.cols : nullptr;
    float ss = 0.f;
    for (int c = threadIdx.x; c < p.cols; c += blockDim.x) {
        float v = x[c];
        if (dl) {
            v += dl[c];
            x[c] = v;
        }
        ss += v * v;
    }
    float inv = rsqrtf(block_sum(ss, scratch) / p.cols + p.eps);
    bf16* o = p.out + (size_t)r * p.cols;
    for (int c = threadIdx.x; c < p.cols; c += blockDim.x) o[c] = f2bf(x[c] * inv * p.w[c]);
}
