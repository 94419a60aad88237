// Per-head QK RMSNorm + partial neox RoPE, and the write of K and V into the paged cache.
// Grid (token, group of ROPE_WARPS heads): one warp per head. CPU twins: rms_norm_row, rope_row.
// The rotation angles depend on the position only: each CTA reads its token's cos/sin from a
// table the host computed in f64 (as the CPU twin does, so large positions agree). A
// double-precision pow and sincos per element of every head made this kernel ~19 us a layer at
// batch 1; once per CTA, ~33 us a layer at batch 64 (12k CTAs, each waiting on f64 math), 26 us
// with the table. (A warp's head row kept in registers, its loads issued before the position's,
// measured slower at batch 64: 33 us, its 74 registers halving the CTAs an SM holds.)
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(ROPE_WARPS * WARP) qk_norm_rope_store(const RopeParams p) {
    __shared__ float buf[ROPE_WARPS][ROPE_MAX_D];
    __shared__ float cs[ROPE_MAX_D / 2], sn[ROPE_MAX_D / 2];
    // The attention after it may start its CTAs now (block_attention_deep, launched as a
    // programmatic dependent): they read only the step's layout before their pdl_wait.
    pdl_release();
    int t = blockIdx.x, lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    int d = p.d, half = p.rot / 2, pos = p.tok_pos[t];
    for (int j = threadIdx.x; j < half; j += blockDim.x) {
        if (pos < p.table_positions) {
            const float2 v = reinterpret_cast<const float2*>(p.cos_sin)[(size_t)pos * half + j];
            cs[j] = v.x;
            sn[j] = v.y;
        } else {
            double freq = pow((double)p.theta, -2.0 * j / p.rot);
            double s, c;
            sincos((double)pos * freq, &s, &c);
            cs[j] = (float)c;
            sn[j] = (float)s;
        }
    }
    __syncthreads();
    const int32_t* pt = p.kv.page_table + p.kv.tok_pt[t];
    const float* row = p.qkv + (size_t)t * (p.nh + 2 * p.nkv) * d;
    float* b = buf[w];
    for (int h = blockIdx.y * ROPE_WARPS + w; h < p.nh + 2 * p.nkv; h += ROPE_WARPS * gridDim.y) {
        const float* src = row + (size_t)h * d;
        if (h >= p.nh + p.nkv) {  // V: stored as is
            bf16* dst = p.kv.pool + kv_offset(p.kv, pt, pos, 1, p.nkv, h - p.nh - p.nkv, d);
            for (int i = lane; i < d; i += WARP) dst[i] = f2bf(src[i]);
            continue;
        }
        const float* nw = h < p.nh ? p.q_norm : p.k_norm;
        float ss = 0.f;
        for (int i = lane; i < d; i += WARP) {
            float v = src[i];
            ss += v * v;
        }
        float inv = rsqrtf(warp_sum(ss) / d + p.eps);
        for (int i = lane; i < d; i += WARP) b[i] = src[i] * inv * nw[i];
        __syncwarp();
        bf16* dst = h < p.nh ? p.q_out + (size_t)t * p.nh * d + (size_t)h * d
                             : p.kv.pool + kv_offset(p.kv, pt, pos, 0, p.nkv, h - p.nh, d);
        for (int i = lane; i < d; i += WARP) {
            float o = b[i];
            if (i < p.rot) {
                int j = i < half ? i : i - half;
                float sf = sn[j], cf = cs[j];
                o = i < half ? b[i] * cf - b[i + half] * sf : b[i] * cf + b[i - half] * sf;
            }
            dst[i] = f2bf(o);
        }
        __syncwarp();
    }
}
