// The MoE router in one kernel, one CTA per token: fp32 logits h W^T, sigmoid, + expert_bias,
// group-limited top-k (group score = sum of its two largest biased scores), weights
// s_k / sum(s_chosen) * scale from the unbiased scores. CPU twin: backend::cpu::route.
#include "common.cuh"

#define ROUTER_THREADS 256
#define ROUTER_MAX_H 8192
#define ROUTER_MAX_E 1024
#define ROUTER_MAX_GROUPS 64

extern "C" __global__ void __launch_bounds__(ROUTER_THREADS) moe_router(const RouterParams p) {
    __shared__ float hs[ROUTER_MAX_H];
    __shared__ float sc[ROUTER_MAX_E], bs[ROUTER_MAX_E];
    __shared__ float gscore[ROUTER_MAX_GROUPS];
    __shared__ int gkeep[ROUTER_MAX_GROUPS];
    __shared__ int chosen[ROUTER_MAX_E];
    int t = blockIdx.x, lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = blockDim.x / WARP;
    const bf16* h = p.h + (size_t)t * p.hidden;
    for (int i = threadIdx.x; i < p.hidden; i += blockDim.x) hs[i] = bf2f(h[i]);
    __syncthreads();
    // One warp per expert; 16-byte loads of the router row (hidden % 8 == 0, checked on the host).
    for (int e = w; e < p.experts; e += nw) {
        const bf16* wr = p.w + (size_t)e * p.hidden;
        float acc = 0.f;
        for (int c = lane * 8; c < p.hidden; c += WARP * 8) {
            float f[8];
            bf16x8_to_f32(*reinterpret_cast<const bf16x8*>(wr + c), f);
#pragma unroll
            for (int j = 0; j < 8; j++) acc += hs[c + j] * f[j];
        }
        acc = warp_sum(acc);
        if (lane == 0) {
            float s = 1.f / (1.f + expf(-acc));
            sc[e] = s;
            bs[e] = s + p.bias[e];
        }
    }
    __syncthreads();
    int gsize = p.experts / p.n_group;
    for (int g = threadIdx.x; g < p.n_group; g += blockDim.x) {
        float a = -FLT_MAX, b = -FLT_MAX;  // two largest
        for (int e = g * gsize; e < (g + 1) * gsize; e++) {
            float v = bs[e];
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
        for (int o = 0; o < p.n_group; o++)
            rank += gscore[o] > gscore[g] || (gscore[o] == gscore[g] && o < g);
        gkeep[g] = rank < p.topk_group;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < p.experts; e += blockDim.x) {
        int rank = -1;
        if (gkeep[e / gsize]) {
            rank = 0;
            for (int o = 0; o < p.experts; o++)
                if (gkeep[o / gsize]) rank += bs[o] > bs[e] || (bs[o] == bs[e] && o < e);
        }
        chosen[e] = rank;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int* ids = p.topk_ids + (size_t)t * p.topk;
        for (int e = 0; e < p.experts; e++)
            if (chosen[e] >= 0 && chosen[e] < p.topk) ids[chosen[e]] = e;
        float sum = 0.f;
        for (int k = 0; k < p.topk; k++) sum += sc[ids[k]];
        for (int k = 0; k < p.topk; k++) p.topk_w[(size_t)t * p.topk + k] = sc[ids[k]] / sum * p.scale;
    }
}
