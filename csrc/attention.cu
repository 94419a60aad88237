// Bidirectional block attention over the paged KV cache, GQA, online softmax, fp32 accumulate.
// Query token t (one CTA per (token, kv head)) sees keys [0, tok_limit[t]) of its sequence;
// the group of query heads sharing a KV head is done together so each K/V row is read once.
// The ATT_WARPS warps split the keys and merge their (max, sum, acc) at the end.
// Lane j of a warp scores key j of a 32-key chunk; then every lane accumulates its own
// d/32 output dims over the chunk (p_j broadcast by shuffle).
#include "common.cuh"

#define ATT_WARPS 4
#define ATT_MAX_G 8     // query heads per KV head
#define ATT_MAX_D 256
#define ATT_DPL (ATT_MAX_D / WARP)  // output dims per lane

extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP) block_attention(const AttnParams p) {
    __shared__ float qs[ATT_MAX_G][ATT_MAX_D];
    __shared__ float red_m[ATT_WARPS][ATT_MAX_G], red_l[ATT_WARPS][ATT_MAX_G];
    __shared__ float red_acc[ATT_WARPS][ATT_MAX_G][ATT_MAX_D];
    int t = blockIdx.x, kh = blockIdx.y, lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    int d = p.d, group = p.nh / p.nkv, limit = p.tok_limit[t];
    const int32_t* pt = p.page_table + p.tok_pt[t];
    for (int i = threadIdx.x; i < group * d; i += blockDim.x) {
        int g = i / d, c = i % d;
        qs[g][c] = bf2f(p.q[(size_t)t * p.nh * d + (size_t)(kh * group + g) * d + c]) * p.scale;
    }
    __syncthreads();

    float m[ATT_MAX_G], l[ATT_MAX_G], acc[ATT_MAX_G][ATT_DPL];
#pragma unroll
    for (int g = 0; g < ATT_MAX_G; g++) {
        m[g] = -FLT_MAX;
        l[g] = 0.f;
#pragma unroll
        for (int j = 0; j < ATT_DPL; j++) acc[g][j] = 0.f;
    }
    for (int base = w * WARP; base < limit; base += ATT_WARPS * WARP) {
        int key = base + lane;
        bool valid = key < limit;
        float s[ATT_MAX_G];
#pragma unroll
        for (int g = 0; g < ATT_MAX_G; g++) s[g] = 0.f;
        if (valid) {
            const bf16* kr = p.kv + kv_offset(pt, key, p.layer, p.num_layers, 0, p.page_size, p.nkv, kh, d);
            for (int c = 0; c < d; c += 8) {
                bf16x8 kv8 = *reinterpret_cast<const bf16x8*>(kr + c);
                float kf[8];
                bf16x8_to_f32(kv8, kf);
#pragma unroll
                for (int g = 0; g < ATT_MAX_G; g++) {
                    if (g < group) {
#pragma unroll
                        for (int e = 0; e < 8; e++) s[g] += qs[g][c + e] * kf[e];
                    }
                }
            }
        }
        float pj[ATT_MAX_G];
#pragma unroll
        for (int g = 0; g < ATT_MAX_G; g++) {
            if (g >= group) continue;
            float sg = valid ? s[g] : -FLT_MAX;
            float mnew = fmaxf(m[g], warp_max(sg));
            float corr = __expf(m[g] - mnew);
            pj[g] = valid ? __expf(sg - mnew) : 0.f;
            l[g] = l[g] * corr + warp_sum(pj[g]);
#pragma unroll
            for (int j = 0; j < ATT_DPL; j++) acc[g][j] *= corr;
            m[g] = mnew;
        }
        int nkeys = min(WARP, limit - base);
        for (int jk = 0; jk < nkeys; jk++) {
            const bf16* vr = p.kv + kv_offset(pt, base + jk, p.layer, p.num_layers, 1, p.page_size, p.nkv, kh, d);
            float vv[ATT_DPL];
#pragma unroll
            for (int j = 0; j < ATT_DPL; j++) {
                int c = lane + j * WARP;
                vv[j] = c < d ? bf2f(vr[c]) : 0.f;
            }
#pragma unroll
            for (int g = 0; g < ATT_MAX_G; g++) {
                if (g >= group) continue;
                float pg = __shfl_sync(0xffffffffu, pj[g], jk);
#pragma unroll
                for (int j = 0; j < ATT_DPL; j++) acc[g][j] += pg * vv[j];
            }
        }
    }
    // Merge the warps' partial softmaxes.
#pragma unroll
    for (int g = 0; g < ATT_MAX_G; g++) {
        if (g >= group) continue;
        if (lane == 0) {
            red_m[w][g] = m[g];
            red_l[w][g] = l[g];
        }
#pragma unroll
        for (int j = 0; j < ATT_DPL; j++) {
            int c = lane + j * WARP;
            if (c < d) red_acc[w][g][c] = acc[g][j];
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < group * d; i += blockDim.x) {
        int g = i / d, c = i % d;
        float mm = -FLT_MAX;
        for (int ww = 0; ww < ATT_WARPS; ww++) mm = fmaxf(mm, red_m[ww][g]);
        float ll = 0.f, a = 0.f;
        for (int ww = 0; ww < ATT_WARPS; ww++) {
            float f = red_l[ww][g] > 0.f ? __expf(red_m[ww][g] - mm) : 0.f;
            ll += red_l[ww][g] * f;
            a += red_acc[ww][g][c] * f;
        }
        p.out[(size_t)t * p.nh * d + (size_t)(kh * group + g) * d + c] = f2bf(a / ll);
    }
}
