// RMSNorm fused with the residual add: x += delta; out = bf16(x / rms(x) * w). One CTA per row.
// CPU twin: backend::cpu::rms_norm_row.
#include "common.cuh"

// The row's first NORM_CACHE * blockDim values stay in registers between the two passes, and
// their loads are issued together (a loop of dependent-latency loads made this ~8 us a call at
// 32 rows; with 8 values a thread, flash's 4096 columns took ~12 us, half of them in that loop);
// columns past that are read again. The norm weights of those columns are loaded with them: read
// in the output loop, each load waited behind the previous bf16 store (out may alias w as far as
// the compiler knows), one latency per column, ~6 of a call's ~10 us at 32 rows. Each thread sums
// its values in increasing column order, as before.
extern "C" __global__ void __launch_bounds__(NORM_THREADS) add_rms_norm(const NormParams p) {
    __shared__ float scratch[32];
    // The router after the post-attention norm (moe_route, a programmatic dependent) may start
    // loading its weights now; it waits for this kernel before it reads the rows.
    pdl_release();
    int r = blockIdx.x;
    float* x = p.x + (size_t)r * p.cols;
    const float* dl = p.delta ? p.delta + (size_t)r * p.cols : nullptr;
    float v[NORM_CACHE], wv[NORM_CACHE];
#pragma unroll
    for (int u = 0; u < NORM_CACHE; u++) {
        const int c = threadIdx.x + u * NORM_THREADS;
        v[u] = c < p.cols ? (dl ? x[c] + dl[c] : x[c]) : 0.f;
        wv[u] = c < p.cols ? p.w[c] : 0.f;
    }
    float ss = 0.f;
#pragma unroll
    for (int u = 0; u < NORM_CACHE; u++) {
        const int c = threadIdx.x + u * NORM_THREADS;
        if (c < p.cols) {
            if (dl) x[c] = v[u];
            ss += v[u] * v[u];
        }
    }
    for (int c = threadIdx.x + NORM_CACHE * NORM_THREADS; c < p.cols; c += NORM_THREADS) {
        float w = x[c];
        if (dl) {
            w += dl[c];
            x[c] = w;
        }
        ss += w * w;
    }
    float inv = rsqrtf(block_sum(ss, scratch) / p.cols + p.eps);
    bf16* o = p.out + (size_t)r * p.cols;
#pragma unroll
    for (int u = 0; u < NORM_CACHE; u++) {
        const int c = threadIdx.x + u * NORM_THREADS;
        if (c < p.cols) o[c] = f2bf(v[u] * inv * wv[u]);
    }
    for (int c = threadIdx.x + NORM_CACHE * NORM_THREADS; c < p.cols; c += NORM_THREADS) o[c] = f2bf(x[c] * inv * p.w[c]);
}
