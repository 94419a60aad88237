// The MoE router: fp32 logits h W^T, sigmoid, + expert_bias, group-limited top-k (group score =
// sum of its two largest biased scores), weights s_k / sum(s_chosen) * scale from the unbiased
// scores. CPU twin: backend::cpu::route. LLaDA2.2's block routing (moe_router_block) picks each
// token's top-k from its routing block's pool instead; CPU twin: backend::cpu::route_block.
#include "common.cuh"


// The last part of both routers, per token t (the whole CTA): the top-k of the candidate experts
// (`candidate(e)`; bk holds their biased scores, -inf for the others) by rank, ties to the lower
// index, then the picks of row t written: weights sc / sum(sc of the chosen, in rank order) *
// scale, and the shared expert (weight 1) as pick number topk when shared_expert >= 0.
template <class Candidate>
__device__ __forceinline__ void pick_and_write(const float* sc, const float* bk, Candidate candidate, int* ids, int experts,
                                               int topk, float scale, int shared_expert, int32_t* topk_ids, float* topk_w,
                                               int t) {
    __shared__ float wsum;
    for (int e = threadIdx.x; e < experts; e += blockDim.x) {
        if (!candidate(e)) continue;
        const float v = bk[e];
        int rank = 0;
#pragma unroll 8
        for (int o = 0; o < experts; o++) {
            const float u = bk[o];
            rank += u > v || (u == v && o < e);
        }
        if (rank < topk) ids[rank] = e;
    }
    __syncthreads();
    if (threadIdx.x == 0) {  // the CPU's order: rank order
        float sum = 0.f;
        for (int k = 0; k < topk; k++) sum += sc[ids[k]];
        wsum = sum;
    }
    __syncthreads();
    const int picks = topk + (shared_expert >= 0);
    for (int k = threadIdx.x; k < topk; k += blockDim.x) {
        topk_ids[(size_t)t * picks + k] = ids[k];
        topk_w[(size_t)t * picks + k] = sc[ids[k]] / wsum * scale;
    }
    if (threadIdx.x == 0 && shared_expert >= 0) {  // the shared expert, weight 1
        topk_ids[(size_t)t * picks + topk] = shared_expert;
        topk_w[(size_t)t * picks + topk] = 1.f;
    }
}

// moe_router_select: one CTA per token, from the fp32 logits (cuBLAS, h W^T): sigmoid, + bias,
// group score = sum of the two largest biased scores, topk_group groups, top-k by biased score,
// ties to the lower index, weights from the unbiased scores in rank order. The expert ranks are
// computed against a masked copy of the biased scores (one shared read per comparison) and
// each selected expert writes its own slot.
extern "C" __global__ void __launch_bounds__(ROUTER_THREADS) moe_router_select(const RouterParams p) {
    __shared__ float sc[ROUTER_MAX_E], bs[ROUTER_MAX_E], bk[ROUTER_MAX_E];
    __shared__ float gscore[ROUTER_MAX_GROUPS];
    __shared__ int gkeep[ROUTER_MAX_GROUPS];
    __shared__ int ids[ROUTER_MAX_E];
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
    pick_and_write(sc, bk, [&](int e) { return gkeep[e / gsize] != 0; }, ids, p.experts, p.topk, p.scale, p.shared_expert,
                   p.topk_ids, p.topk_w, t);
}


// moe_router_block: one CTA per token t, of routing block b = t / block (rows [b * block,
// min((b + 1) * block, tokens))). An expert's block score is the largest s + bias over the
// block's rows; the `capacity` experts with the largest block scores form the pool (ties to the
// lower index); row t ranks the pool by its own s + bias (the others compete as -inf) and takes
// the top-k, ties to the lower index, weights s_k / sum(s_chosen) * scale summed in rank order
// (the CPU's order). Every CTA of a block computes the block's pool itself: the same values in
// the same order, so the same pool, and no second launch. (One CTA per block walking its rows in
// turn took ~100 us a layer at 32 rows: three barriers and a 256 x 256 ranking per row.) With
// pool_ids set, the block's first CTA also writes the pool out, in rank order (recording).
extern "C" __global__ void __launch_bounds__(ROUTER_THREADS) moe_router_block(const RouterBlockParams p) {
    __shared__ float bmax[ROUTER_MAX_E], sc[ROUTER_MAX_E], bk[ROUTER_MAX_E];
    __shared__ int pool[ROUTER_MAX_E];
    __shared__ int ids[ROUTER_MAX_E];
    const int t = blockIdx.x;
    const int t0 = (t / p.block) * p.block;
    const int t1 = min(t0 + p.block, p.tokens);
    for (int e = threadIdx.x; e < p.experts; e += blockDim.x) {
        float m = -INFINITY;
        const float b = p.bias[e];
#pragma unroll 8
        for (int r = t0; r < t1; r++) {
            const float s = 1.f / (1.f + expf(-p.logits[(size_t)r * p.experts + e]));
            m = fmaxf(m, s + b);
        }
        bmax[e] = m;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < p.experts; e += blockDim.x) {
        const float v = bmax[e];
        int rank = 0;
#pragma unroll 8
        for (int o = 0; o < p.experts; o++) {
            const float u = bmax[o];
            rank += u > v || (u == v && o < e);
        }
        pool[e] = rank < p.capacity;
        if (p.pool_ids != nullptr && t == t0 && rank < p.capacity) p.pool_ids[(size_t)(t / p.block) * p.capacity + rank] = e;
    }
    __syncthreads();
    const float* lg = p.logits + (size_t)t * p.experts;
    for (int e = threadIdx.x; e < p.experts; e += blockDim.x) {
        const float s = 1.f / (1.f + expf(-lg[e]));
        sc[e] = s;
        bk[e] = pool[e] ? s + p.bias[e] : -INFINITY;
    }
    __syncthreads();
    pick_and_write(sc, bk, [&](int e) { return pool[e] != 0; }, ids, p.experts, p.topk, p.scale, p.shared_expert, p.topk_ids,
                   p.topk_w, t);
}
