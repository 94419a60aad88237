// The MoE router: fp32 logits h W^T, sigmoid, + expert_bias, group-limited top-k (group score =
// sum of its two largest biased scores), weights s_k / sum(s_chosen) * scale from the unbiased
// scores. CPU twin: backend::cpu::route. LLaDA2.2's block routing (moe_router_block) picks each
// token's top-k from its routing block's pool instead; CPU twin: backend::cpu::route_block.
#include "common.cuh"
#include "route_select.cuh"


// The block router's last part, per token t (the whole CTA): the top-k of the candidate experts
// (`candidate(e)`; bk holds their biased scores, -inf for the others) by rank, ties to the lower
// index, then the picks of row t written: weights sc / sum(sc of the chosen, in rank order) *
// scale, and the shared expert (weight 1) as pick number topk when shared_expert >= 0; with
// counts set, each pick's place in its expert (as moe_router_select).
template <class Candidate>
__device__ __forceinline__ void pick_and_write(const float* sc, const float* bk, Candidate candidate, int* ids, int experts,
                                               int topk, float scale, int shared_expert, int32_t* topk_ids, float* topk_w,
                                               int32_t* counts, int32_t* pick_pos, int t) {
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
    for (int k = threadIdx.x; k < picks; k += blockDim.x) {
        const int id = k < topk ? ids[k] : 0;
        const RoutePick r = write_pick(topk_ids, topk_w, t, k, topk, shared_expert, scale, id, sc[id], wsum);
        if (counts != nullptr) pick_pos[r.j] = atomicAdd(&counts[r.e], 1);
    }
}

// moe_router_select: one warp per token, blockDim.x / WARP tokens a CTA (up to
// ROUTER_SELECT_MAX_WARPS; the host sizes it by the rows, moe.rs select_warps), from the fp32
// logits (cuBLAS, h W^T), by route_select_warp (route_select.cuh: the selection in registers, as
// moe_route's). With counts set, each pick also takes its place in its expert (moe_permute's slot
// order): first among the CTA's picks of that expert (shared-memory atomics), then the CTA takes
// its experts' places at once (one global atomic an expert the CTA picked). A global atomic a
// pick, as moe_router_select_wide takes them, serialises on an expert that most tokens pick: the
// selection grew by about 5 ns a row, to 31 us a layer of a 4,096-token prefill at mini's shape,
// 19 us with CTAs of 16 tokens (docs/PERF.md, session 32).
constexpr int ROUTER_LOAD_ROUND = 8;  // moe_router_select_wide's and moe_router_block's loads in flight a thread

extern "C" __global__ void __launch_bounds__(ROUTER_SELECT_MAX_WARPS * WARP) moe_router_select(const RouterParams p) {
    __shared__ RouteWarp scratch[ROUTER_SELECT_MAX_WARPS];
    __shared__ int cta_count[ROUTE_MAX_E + 1], cta_base[ROUTE_MAX_E + 1];  // + the shared expert
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    const int t = blockIdx.x * (blockDim.x / WARP) + w;
    const bool counting = p.counts != nullptr;
    const int n_experts = p.experts + (p.shared_expert >= 0);
    if (counting)
        for (int e = threadIdx.x; e < n_experts; e += blockDim.x) cta_count[e] = 0;
    __syncthreads();
    const int picks = p.topk + (p.shared_expert >= 0);
    int e = -1, local = 0;  // this lane's pick and its place among the CTA's picks of e
    if (t < p.tokens) {  // uniform over the warp
        int id;
        float sk, sum;
        route_select_warp(p, p.logits + (size_t)t * p.experts, p.bias, scratch[w], id, sk, sum);
        if (lane < picks) {
            e = write_pick(p.topk_ids, p.topk_w, t, lane, p.topk, p.shared_expert, p.scale, id, sk, sum).e;
            if (counting) local = atomicAdd(&cta_count[e], 1);
        }
    }
    if (!counting) return;  // uniform over the grid
    __syncthreads();  // the CTA's counts are in
    for (int x = threadIdx.x; x < n_experts; x += blockDim.x)
        if (cta_count[x] > 0) cta_base[x] = atomicAdd(&p.counts[x], cta_count[x]);
    __syncthreads();  // the CTA's places are taken
    if (e >= 0) p.pick_pos[(size_t)t * picks + lane] = cta_base[e] + local;
}

// moe_router_select_wide: the same picks for any router moe_router_select cannot take (more than
// ROUTE_MAX_E experts, or groups that are not a power of two in [2, WARP] experts). One warp per
// token, ROUTER_SELECT_WIDE_WARPS tokens a CTA, from the fp32 logits
// (cuBLAS, h W^T): sigmoid, + bias, group score = sum of the two largest biased scores, topk_group
// groups (ties to the lower group), then topk rounds of a warp argmax over the kept experts
// (ties to the lower index), weights from the unbiased scores summed in rank order. With counts
// set, each pick also takes its place in its expert (moe_permute's slot order) by a global
// atomic. Both scores stay in the warp's shared memory, so a round is shared-memory reads and
// shuffles only. (One CTA per token ranking all experts against all others took ~38 us a layer
// at batch 64: 256 x 256 comparisons per token.)
extern "C" __global__ void __launch_bounds__(ROUTER_SELECT_WIDE_WARPS * WARP) moe_router_select_wide(const RouterParams p) {
    constexpr int W = ROUTER_SELECT_WIDE_WARPS;
    __shared__ float sc_all[W][ROUTER_MAX_E];  // sigmoid scores
    __shared__ float bk_all[W][ROUTER_MAX_E];  // biased scores; -inf: dropped group or taken
    __shared__ float gscore_all[W][ROUTER_MAX_GROUPS];
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    const int t = blockIdx.x * W + w;
    if (t >= p.tokens) return;  // whole warps: no barrier below spans warps
    float *sc = sc_all[w], *bk = bk_all[w], *gscore = gscore_all[w];
    const float* lg = p.logits + (size_t)t * p.experts;
    // The lane's experts lane, lane + WARP, .., ROUTER_LOAD_ROUND of them loaded at once (as one
    // loop of load, sigmoid and stores, the sm_90a SASS waited out each load in turn).
    in_load_rounds<ROUTER_LOAD_ROUND>(
        (p.experts - lane + WARP - 1) / WARP, [&](int i) { return make_float2(lg[lane + i * WARP], p.bias[lane + i * WARP]); },
        [&](int i, const float2& lb) {
            const float s = 1.f / (1.f + expf(-lb.x));
            sc[lane + i * WARP] = s;
            bk[lane + i * WARP] = s + lb.y;
        });
    __syncwarp();
    const int gsize = p.experts / p.n_group;
    for (int g = lane; g < p.n_group; g += WARP) {
        float a = -FLT_MAX, b = -FLT_MAX;  // two largest
#pragma unroll 8
        for (int e = g * gsize; e < (g + 1) * gsize; e++) {
            const float v = bk[e];
            if (v > a) {
                b = a;
                a = v;
            } else if (v > b) {
                b = v;
            }
        }
        gscore[g] = a + b;
    }
    __syncwarp();
    for (int g = lane; g < p.n_group; g += WARP) {
        int rank = 0;
        for (int o = 0; o < p.n_group; o++) rank += gscore[o] > gscore[g] || (gscore[o] == gscore[g] && o < g);
        // Experts of dropped groups compete as -inf: never above a kept (finite) score.
        if (rank >= p.topk_group)
            for (int e = g * gsize; e < (g + 1) * gsize; e++) bk[e] = -INFINITY;
    }
    __syncwarp();
    // Round k: the warp's best remaining expert is pick k (lane k keeps it); the host checks
    // topk < WARP and that the kept groups hold >= topk experts.
    int my_id = 0;
    float my_s = 0.f, sum = 0.f;
    for (int k = 0; k < p.topk; k++) {
        float best = -INFINITY;
        int bi = 0x7fffffff;
#pragma unroll 8
        for (int e = lane; e < p.experts; e += WARP) {
            const float v = bk[e];
            if (v > best) {
                best = v;
                bi = e;
            }
        }
        // The warp's largest score, then the lowest index among the lanes holding it: two
        // reductions in hardware where a shuffle argmax waits on five dependent steps.
        // (+ 0.f: -0 as +0, so equal floats give equal keys, as the comparisons above see them.)
        const unsigned key = best > -INFINITY ? order_key(best + 0.f) : 0u;
        const unsigned top = __reduce_max_sync(0xffffffffu, key);
        bi = (int)__reduce_min_sync(0xffffffffu, key == top ? (unsigned)bi : 0xffffffffu);
        const float s = sc[bi];
        sum += s;  // the CPU's order: rank order
        if (lane == k) {
            my_id = bi;
            my_s = s;
        }
        if (lane == bi % WARP) bk[bi] = -INFINITY;
        __syncwarp();
    }
    const int picks = p.topk + (p.shared_expert >= 0);
    if (lane < picks) {
        const RoutePick r = write_pick(p.topk_ids, p.topk_w, t, lane, p.topk, p.shared_expert, p.scale, my_id, my_s, sum);
        if (p.counts != nullptr) p.pick_pos[r.j] = atomicAdd(&p.counts[r.e], 1);
    }
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
        // ROUTER_LOAD_ROUND rows' logits loaded at once (one loop of load and max waited out each
        // of the block's loads in turn: the sm_90a SASS).
        in_load_rounds<ROUTER_LOAD_ROUND>(
            t1 - t0, [&](int i) { return p.logits[(size_t)(t0 + i) * p.experts + e]; },
            [&](int, float l) { m = fmaxf(m, 1.f / (1.f + expf(-l)) + b); });
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
        const float l = lg[e], b = p.bias[e];  // both loads out before either is used
        const float s = 1.f / (1.f + expf(-l));
        sc[e] = s;
        bk[e] = pool[e] ? s + b : -INFINITY;
    }
    __syncthreads();
    pick_and_write(sc, bk, [&](int e) { return pool[e] != 0; }, ids, p.experts, p.topk, p.scale, p.shared_expert, p.topk_ids,
                   p.topk_w, p.counts, p.pick_pos, t);
}

