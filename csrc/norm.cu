// RMSNorm fused with the residual add: x += delta; out = bf16(x / rms(x) * w). One CTA per row.
// add_moe_rms_norm (below): the same, delta summed from a MoE layer's expert slots on the way.
// CPU twin: backend::cpu::rms_norm_row.
#include "common.cuh"
#include "moe_slots.cuh"

// The row's first NORM_CACHE * blockDim values stay in registers between the two passes, and
// their loads are issued together (a loop of dependent-latency loads made this ~8 us a call at
// 32 rows; with 8 values a thread at 256 threads, flash's 4096 columns took ~12 us, half of them
// in that loop: the host now sizes the block so that rows up to 8,192 columns have none);
// columns past that are read again. The norm weights of those columns are loaded with them: read
// in the output loop, each load waited behind the previous bf16 store (out may alias w as far as
// the compiler knows), one latency per column, ~6 of a call's ~10 us at 32 rows. Each thread sums
// its values in increasing column order, as before.
//
// At most 40 registers (__maxnreg__: no spills; 52 with NORM_MAX_THREADS's launch bounds): six
// CTAs of mini's 256 threads an SM instead of four. Each CTA is a row's two memory latencies with
// a block reduction between, so the SM's bytes in flight grow with the CTAs it holds: a 4,096-token
// prefill's add_rms_norm took 31.2 against 34.4 us a layer (docs/PERF.md, session 32).
extern "C" __global__ void __maxnreg__(40) add_rms_norm(const NormParams p) {
    __shared__ float scratch[32];
    // The router after the post-attention norm (moe_route, a programmatic dependent) may start
    // loading its weights now; it waits for this kernel before it reads the rows.
    pdl_release();
    if (blockIdx.x == 0)
        for (int i = threadIdx.x; i < p.zero_len; i += blockDim.x) p.zero[i] = 0;
    int r = blockIdx.x;
    float* x = p.x + (size_t)r * p.cols;
    const float* dl = p.delta ? p.delta + (size_t)r * p.cols : nullptr;
    float v[NORM_CACHE], wv[NORM_CACHE];
#pragma unroll
    for (int u = 0; u < NORM_CACHE; u++) {
        const int c = threadIdx.x + u * blockDim.x;
        v[u] = c < p.cols ? (dl ? x[c] + dl[c] : x[c]) : 0.f;
        wv[u] = c < p.cols ? p.w[c] : 0.f;
    }
    float ss = 0.f;
#pragma unroll
    for (int u = 0; u < NORM_CACHE; u++) {
        const int c = threadIdx.x + u * blockDim.x;
        if (c < p.cols) {
            if (dl) x[c] = v[u];
            ss += v[u] * v[u];
        }
    }
    for (int c = threadIdx.x + NORM_CACHE * blockDim.x; c < p.cols; c += blockDim.x) {
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
        const int c = threadIdx.x + u * blockDim.x;
        if (c < p.cols) o[c] = f2bf(v[u] * inv * wv[u]);
    }
    for (int c = threadIdx.x + NORM_CACHE * blockDim.x; c < p.cols; c += blockDim.x) o[c] = f2bf(x[c] * inv * p.w[c]);
}

// add_rms_norm whose delta is a MoE layer's output still in its expert slots: moe_combine fused
// into the next layer's input norm, so the combined rows make no round trip through memory (an
// f32 row written and read again, and a launch: ~8 us a layer at batch 1). Per row, delta is the
// token's topk weighted slot rows summed in k order, plus the shared expert's y where p.delta is
// given, in moe_combine's order of operations; then x += delta, out = bf16(x / rms(x) * w) as in
// add_rms_norm. A thread takes groups of MOE_NORM_COLS columns (one 16-byte bf16 load a slot):
// group t, t + blockDim.x, ...; the first NORM_CACHE / MOE_NORM_COLS stay in registers between
// the two passes. The host checks cols % MOE_NORM_COLS == 0 (a model's hidden size, at load).

// x's group of columns from c, as two float4.
struct XGroup {
    float4 h[MOE_NORM_COLS / 4];
};
__device__ __forceinline__ XGroup load_x_group(const float* x, int c) {
    XGroup g;
#pragma unroll
    for (int h = 0; h < MOE_NORM_COLS / 4; h++) g.h[h] = reinterpret_cast<const float4*>(x + c)[h];
    return g;
}

// v = x + delta for the group of columns from c (x's values in xg); x is left as it was.
__device__ __forceinline__ void moe_norm_group(const NormParams& p, const XGroup& xg, const float* dl, const int32_t* slots, int c,
                                               float (&v)[MOE_NORM_COLS]) {
    static_assert(MOE_NORM_COLS == 8, "a group is one 16-byte load of bf16 a slot");
    float s[MOE_NORM_COLS];
    slot_sum8<NORM_SLOT_ROUND>(p.slot_out, slots, p.topk, p.cols, c, s);
#pragma unroll
    for (int h = 0; h < MOE_NORM_COLS / 4; h++) {
        const float4 xv = xg.h[h];
        float4 d = make_float4(s[4 * h], s[4 * h + 1], s[4 * h + 2], s[4 * h + 3]);
        if (dl) {
            const float4 y = reinterpret_cast<const float4*>(dl + c)[h];
            d.x += y.x;
            d.y += y.y;
            d.z += y.z;
            d.w += y.w;
        }
        v[4 * h] = xv.x + d.x;
        v[4 * h + 1] = xv.y + d.y;
        v[4 * h + 2] = xv.z + d.z;
        v[4 * h + 3] = xv.w + d.w;
    }
}

__device__ __forceinline__ void store_group_f32(float* dst, const float (&v)[MOE_NORM_COLS]) {
#pragma unroll
    for (int h = 0; h < MOE_NORM_COLS / 4; h++) reinterpret_cast<float4*>(dst)[h] = make_float4(v[4 * h], v[4 * h + 1], v[4 * h + 2], v[4 * h + 3]);
}

// bf16(v * inv * w) of a group, one 16-byte store.
__device__ __forceinline__ void store_group_normed(bf16* dst, const float (&v)[MOE_NORM_COLS], float inv, const float* w) {
    static_assert(MOE_NORM_COLS == 8, "a group's output is one uint4 of bf16");
    *reinterpret_cast<uint4*>(dst) = pack_normed8(v, inv, w);
}

// At most 64 registers (NORM_MAX_THREADS a CTA): four CTAs of mini's 256 threads an SM (at 70
// registers, three: a 4,096-token prefill's add_moe_rms_norm took 84.8 against 72.9 us a layer;
// capped at 48, five, it spilled and took 76.8: docs/PERF.md, session 32). NORM_SLOT_ROUND slot
// rows in flight fit them (64, no spill; one at a time it took 61).
extern "C" __global__ void __launch_bounds__(NORM_MAX_THREADS) add_moe_rms_norm(const NormParams p) {
    constexpr int G = MOE_NORM_COLS, CG = NORM_CACHE / MOE_NORM_COLS;
    __shared__ float scratch[32];
    __shared__ int32_t slots[WARP];  // the row's slot places (at most WARP picks: the host checks)
    pdl_release();  // as add_rms_norm: a dependent may start its weight loads
    const int r = blockIdx.x, groups = p.cols / G;
    float* x = p.x + (size_t)r * p.cols;
    const float* dl = p.delta ? p.delta + (size_t)r * p.cols : nullptr;
    // The loads that do not hang on another load go out together first: the row's slot places
    // (into shared memory) and x. Then the slot rows, whose addresses come from the places, a
    // round at once. The norm weights go out after them (in registers beside a round the kernel
    // spilled) and before the first store (a load issued after a store waits behind it: out may
    // alias w as far as the compiler knows), under the x stores and the block sum.
    if (threadIdx.x < p.topk) slots[threadIdx.x] = p.tok_slot[(size_t)r * p.topk + threadIdx.x];
    float v[CG][G], wv[CG][G];
    XGroup xg[CG];
#pragma unroll
    for (int u = 0; u < CG; u++) {
        const int g = threadIdx.x + u * blockDim.x;
        if (g < groups) xg[u] = load_x_group(x, g * G);
    }
    __syncthreads();  // the slots' places are in shared memory
    float ss = 0.f;
#pragma unroll
    for (int u = 0; u < CG; u++) {
        const int g = threadIdx.x + u * blockDim.x;
        if (g < groups) moe_norm_group(p, xg[u], dl, slots, g * G, v[u]);
    }
#pragma unroll
    for (int u = 0; u < CG; u++) {
        const int g = threadIdx.x + u * blockDim.x;
        if (g < groups) {
#pragma unroll
            for (int h = 0; h < G / 4; h++) {
                const float4 w = reinterpret_cast<const float4*>(p.w + g * G)[h];
                wv[u][4 * h] = w.x;
                wv[u][4 * h + 1] = w.y;
                wv[u][4 * h + 2] = w.z;
                wv[u][4 * h + 3] = w.w;
            }
        }
    }
#pragma unroll
    for (int u = 0; u < CG; u++) {
        const int g = threadIdx.x + u * blockDim.x;
        if (g < groups) {
            store_group_f32(x + g * G, v[u]);
#pragma unroll
            for (int j = 0; j < G; j++) ss += v[u][j] * v[u][j];
        }
    }
    for (int g = threadIdx.x + CG * blockDim.x; g < groups; g += blockDim.x) {
        float t[G];
        moe_norm_group(p, load_x_group(x, g * G), dl, slots, g * G, t);
        store_group_f32(x + g * G, t);
#pragma unroll
        for (int j = 0; j < G; j++) ss += t[j] * t[j];
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / p.cols + p.eps);
    bf16* o = p.out + (size_t)r * p.cols;
#pragma unroll
    for (int u = 0; u < CG; u++) {
        const int g = threadIdx.x + u * blockDim.x;
        if (g < groups) store_group_normed(o + g * G, v[u], inv, wv[u]);
    }
    for (int g = threadIdx.x + CG * blockDim.x; g < groups; g += blockDim.x) {
        float t[G], w[G];
#pragma unroll
        for (int j = 0; j < G; j++) {
            t[j] = x[g * G + j];
            w[j] = p.w[g * G + j];
        }
        store_group_normed(o + g * G, t, inv, w);
    }
}
