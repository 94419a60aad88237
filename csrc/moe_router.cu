// The MoE router: fp32 logits h W^T, sigmoid, + expert_bias, group-limited top-k (group score =
// sum of its two largest biased scores), weights s_k / sum(s_chosen) * scale from the unbiased
// scores. CPU twin: backend::cpu::route.
#include "common.cuh"

#define ROUTER_THREADS 256
#define ROUTER_MAX_E 1024
#define ROUTER_MAX_GROUPS 64

// ---------------------------------------------------------------------------------------------
// Two launches: the logits, then the selection.
//
// moe_router_logits: grid (experts / 8, tokens / 8), 256 threads. Warp w computes the logits
// of expert e = 8 * blockIdx.x + w for the 8 tokens of the tile at once: lane j owns hidden
// columns 8j + 256i, so each iteration issues one 16-byte load of the router row and 8 of the
// token rows (unconditional 16-byte loads, unrolled x2: 18 in flight per lane) for 64 FMAs. Mini, batch 1 (32 tokens, 256 experts, hidden 2048): 32 x 4 = 128 CTAs; the
// 1 MB router matrix comes from HBM once (then L2 for the other 3 token tiles), 32 x 4 KB of
// hidden states from L2. Predicted ~4-6 us (latency of ~8 rounds of loads + the launch).
//
// moe_router_select: one CTA per token, the selection (sigmoid, + bias, group
// score = sum of the two largest biased scores, topk_group groups, top-k by biased score, ties
// to the lower index, weights from the unbiased scores in rank order) with the expert ranks
// computed against a masked copy of the biased scores (one shared read per comparison) and
// each selected expert writing its own slot. Predicted ~3-4 us.
// ---------------------------------------------------------------------------------------------
#define ROUTER_CTA_EXPERTS 8  // experts per CTA (one per warp)
#define ROUTER_CTA_TOKENS 8   // tokens per CTA

// 8 bf16 in one 16-byte word -> fp32 (bf16 is the top half of an fp32).
__device__ __forceinline__ void router_unpack8(const uint4 u, float* f) {
    const unsigned x[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(x[i] << 16);
        f[2 * i + 1] = __uint_as_float(x[i] & 0xffff0000u);
    }
}

extern "C" __global__ void __launch_bounds__(ROUTER_CTA_EXPERTS * WARP) moe_router_logits(const RouterParams p) {
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    const int e = blockIdx.x * ROUTER_CTA_EXPERTS + w, tb = blockIdx.y * ROUTER_CTA_TOKENS;
    if (e >= p.experts) return;  // whole warp; no barriers in this kernel
    const int nt = min(ROUTER_CTA_TOKENS, p.tokens - tb);
    const bf16* wr = p.w + (size_t)e * p.hidden;
    // Rows past the last token repeat it (loads stay unconditional, so they batch); not stored.
    const bf16* hr[ROUTER_CTA_TOKENS];
#pragma unroll
    for (int t = 0; t < ROUTER_CTA_TOKENS; t++) hr[t] = p.h + (size_t)(tb + min(t, nt - 1)) * p.hidden;
    float acc[ROUTER_CTA_TOKENS];
#pragma unroll
    for (int t = 0; t < ROUTER_CTA_TOKENS; t++) acc[t] = 0.f;
#pragma unroll 2
    for (int c = lane * 8; c < p.hidden; c += WARP * 8) {
        uint4 hu[ROUTER_CTA_TOKENS];
        const uint4 wu = __ldg(reinterpret_cast<const uint4*>(wr + c));
#pragma unroll
        for (int t = 0; t < ROUTER_CTA_TOKENS; t++) hu[t] = __ldg(reinterpret_cast<const uint4*>(hr[t] + c));
        float wf[8];
        router_unpack8(wu, wf);
#pragma unroll
        for (int t = 0; t < ROUTER_CTA_TOKENS; t++) {
            float hf[8];
            router_unpack8(hu[t], hf);
#pragma unroll
            for (int j = 0; j < 8; j++) acc[t] += wf[j] * hf[j];
        }
    }
#pragma unroll
    for (int t = 0; t < ROUTER_CTA_TOKENS; t++) {
        const float v = warp_sum(acc[t]);
        if (lane == 0 && t < nt) p.logits[(size_t)(tb + t) * p.experts + e] = v;
    }
}

extern "C" __global__ void __launch_bounds__(ROUTER_THREADS) moe_router_select(const RouterParams p) {
    __shared__ float sc[ROUTER_MAX_E], bs[ROUTER_MAX_E], bk[ROUTER_MAX_E];
    __shared__ float gscore[ROUTER_MAX_GROUPS];
    __shared__ int gkeep[ROUTER_MAX_GROUPS];
    __shared__ int ids[ROUTER_MAX_E];
    __shared__ float wsum;
    const int t = blockIdx.x;
    const float* lg = p.logits + (size_t)t * p.experts;
    for (int e = threadIdx.x; e < p.experts; e += blockDim.x) {
        const float s = 1.f / (1.f + expf(-lg[e]));
        sc[e] = s;
        bs[e] = s + p.bias[e];
    }
    __syncthreads();
    const int gsize = p.experts / p.n_group;
    for (int g = threadIdx.x; g < p.n_group; g += blockDim.x) {
        float a = -FLT_MAX, b = -FLT_MAX;  // two largest
        for (int e = g * gsize; e < (g + 1) * gsize; e++) {
            const float v = bs[e];
            if (v > a) {
                b = a;
                a = v;
            } else if (v > b) {
                b = v;
            }
        }
        gscore[g] = a + b;
    }
    __syncthreads();
    for (int g = threadIdx.x; g < p.n_group; g += blockDim.x) {
        int rank = 0;
        for (int o = 0; o < p.n_group; o++) rank += gscore[o] > gscore[g] || (gscore[o] == gscore[g] && o < g);
        gkeep[g] = rank < p.topk_group;
    }
    __syncthreads();
    // Experts of dropped groups compete as -inf: never above a kept (finite) score, never equal.
    for (int e = threadIdx.x; e < p.experts; e += blockDim.x) bk[e] = gkeep[e / gsize] ? bs[e] : -INFINITY;
    __syncthreads();
    for (int e = threadIdx.x; e < p.experts; e += blockDim.x) {
        if (!gkeep[e / gsize]) continue;
        const float v = bk[e];
        int rank = 0;
#pragma unroll 8
        for (int o = 0; o < p.experts; o++) {
            const float u = bk[o];
            rank += u > v || (u == v && o < e);
        }
        if (rank < p.topk) ids[rank] = e;
    }
    __syncthreads();
    if (threadIdx.x == 0) {  // the CPU's order: rank order
        float sum = 0.f;
        for (int k = 0; k < p.topk; k++) sum += sc[ids[k]];
        wsum = sum;
    }
    __syncthreads();
    for (int k = threadIdx.x; k < p.topk; k += blockDim.x) {
        p.topk_ids[(size_t)t * p.topk + k] = ids[k];
        p.topk_w[(size_t)t * p.topk + k] = sc[ids[k]] / wsum * p.scale;
    }
}
