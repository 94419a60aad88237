// The router's top-k selection of one row by one warp, in registers: moe_route (its rows'
// logits in shared memory) and moe_router_select (cuBLAS's logits in global memory) both pick
// here, so the two give the same picks. CPU twin: backend::cpu::route.
#pragma once
#include "common.cuh"

// A warp's scratch for its row's selection.
struct RouteWarp {
    float gscore[ROUTER_MAX_GROUPS];
    int kept[ROUTER_MAX_GROUPS];
};

// One warp a row: the row's logits l and the bias (shared or global memory, read once a lane) ->
// lane k < topk holds pick k (rank order: id, sigmoid score), every lane their sum in rank order.
// As cpu::route: b = sigmoid + bias; a group's score the sum of its two largest b; the topk_group
// best groups (ties to the lower group) keep their experts; the top-k of those by b (ties to the
// lower index); the weights from the sigmoid scores. Lane l holds experts l + 32j in registers,
// so a group (gsize consecutive experts, a power of two <= WARP) is gsize consecutive lanes of
// one register: its two largest b by shuffles within them. A pick round is a lane's best over
// its registers and two hardware reductions (the largest key, then the lowest expert holding it).
// Needs experts <= ROUTE_MAX_E, groups of a power of two in [2, WARP] experts, topk <= WARP
// (the host checks: moe.rs, select_fits).
__device__ __forceinline__ void route_select_warp(const RouterParams& sel, const float* l, const float* bias, RouteWarp& sw, int& my_id,
                                                  float& my_s, float& sum) {
    constexpr int J = ROUTE_MAX_E / WARP;
    const int lane = threadIdx.x % WARP;
    const int E = sel.experts, gsize = E / sel.n_group, gshift = __ffs(gsize) - 1;  // gsize: a power of two
    float s[J], b[J], lv[J], bv[J];
    // The row's logits and the bias, all of a lane's loads issued before the first is used: with
    // each load beside its sigmoid in one guarded loop, the sm_90a SASS waited out each of the 2J
    // loads in turn (moe_router_select: 16 global round trips a row, 12-18 us a call at batch
    // 16-128).
#pragma unroll
    for (int j = 0; j < J; j++) {
        const int e = lane + WARP * j;
        if (e < E) {
            lv[j] = l[e];
            bv[j] = bias[e];
        }
    }
    // (__frcp_rn: 1 / x correctly rounded, as 1.f / x, without the division's slow-path branch
    // between the registers' chains.)
#pragma unroll
    for (int j = 0; j < J; j++) {
        const bool act = lane + WARP * j < E;
        s[j] = act ? __frcp_rn(1.f + expf(-lv[j])) : 0.f;
        b[j] = act ? s[j] + bv[j] : -INFINITY;
    }
    // All registers' shuffles interleaved (the level count is uniform).
    float a1[J], a2[J];
#pragma unroll
    for (int j = 0; j < J; j++) {
        a1[j] = b[j];
        a2[j] = -INFINITY;
    }
#pragma unroll
    for (int o = 1; o < WARP; o <<= 1) {
        if (o >= gsize) break;
#pragma unroll
        for (int j = 0; j < J; j++) {
            const float o1 = __shfl_xor_sync(0xffffffffu, a1[j], o), o2 = __shfl_xor_sync(0xffffffffu, a2[j], o);
            a2[j] = fmaxf(fminf(a1[j], o1), fmaxf(a2[j], o2));
            a1[j] = fmaxf(a1[j], o1);
        }
    }
#pragma unroll
    for (int j = 0; j < J; j++) {
        const int e = lane + WARP * j;
        if (e < E && (e & (gsize - 1)) == 0) sw.gscore[e >> gshift] = a1[j] + a2[j];
    }
    __syncwarp();
    for (int g = lane; g < sel.n_group; g += WARP) {
        const uint32_t mine = order_key(sw.gscore[g]);
        int rank = 0;
        for (int o = 0; o < sel.n_group; o++) {
            const uint32_t k = order_key(sw.gscore[o]);
            rank += k > mine || (k == mine && o < g);
        }
        sw.kept[g] = rank < sel.topk_group;
    }
    __syncwarp();
    uint32_t key[J];  // 0: not a candidate (below every float's key but a negative NaN's)
#pragma unroll
    for (int j = 0; j < J; j++) {
        const int e = lane + WARP * j;
        key[j] = e < E && sw.kept[e >> gshift] ? order_key(b[j]) : 0u;
    }
    my_id = 0;
    my_s = 0.f;
    sum = 0.f;
    for (int k = 0; k < sel.topk; k++) {
        uint32_t best = 0u;
        int bj = 0;
#pragma unroll
        for (int j = 0; j < J; j++)
            if (key[j] > best) {  // strict: the lane's lowest expert among equal keys
                best = key[j];
                bj = j;
            }
        const uint32_t top = __reduce_max_sync(0xffffffffu, best);
        const int id = (int)__reduce_min_sync(0xffffffffu, best == top ? (unsigned)(lane + WARP * bj) : 0xffffffffu);
        const int owner = id % WARP, oj = id / WARP;
        float so = 0.f;
#pragma unroll
        for (int j = 0; j < J; j++)
            if (j == oj) so = s[j];
        const float sk = __shfl_sync(0xffffffffu, so, owner);
        sum += sk;  // the CPU's order: rank order
        if (lane == k) {
            my_id = id;
            my_s = sk;
        }
        if (lane == owner) {
#pragma unroll
            for (int j = 0; j < J; j++)
                if (j == oj) key[j] = 0u;
        }
    }
}

// Pick k of token t written out (k < topk + 1 with a shared expert, else < topk): a routed pick
// (expert id, sigmoid score s, over the picks' score sum in rank order) at weight s / sum * scale,
// or at k == topk the shared expert (shared_expert >= 0) at weight 1. The router kernels all
// write a token's picks this way; each counts their places in its own way, at the pick's index j
// (pick_pos, tok_slot: the same [token][pick] layout as topk_ids and topk_w).
struct RoutePick {
    int e;
    float w;
    size_t j;
};
__device__ __forceinline__ RoutePick write_pick(int32_t* topk_ids, float* topk_w, int t, int k, int topk, int shared_expert, float scale,
                                                int id, float s, float sum) {
    const bool shared = k == topk;
    const RoutePick r{shared ? shared_expert : id, shared ? 1.f : s / sum * scale, (size_t)t * (topk + (shared_expert >= 0)) + k};
    topk_ids[r.j] = r.e;
    topk_w[r.j] = r.w;
    return r;
}
