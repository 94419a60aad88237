// The grouped GEMMs' work list from the router's per-expert pick counts, as moe_permute and
// moe_route (one cluster's rows) both write it: expert e's picks take slots offset[e]..
// (experts in order), and its rows go in items of at most tile_m rows, [expert, first slot,
// rows] each, in expert order.
#pragma once
#include "common.cuh"

// A tile CTA's work item: row blockIdx.y of its grid (the host launches a row of CTAs per
// possible item), its expert, first slot and rows; `live` false past the list's length (the CTA
// has nothing to do). With p.shared_items_first = s, rows 0..s - 1 take the list's last s items
// (the shared expert's) and row y >= s item y - s: a CTA starts in its grid row's order, so
// the shared expert's larger bf16 CTAs start first instead of making the launch's tail.
struct TileItem {
    int e, s0, rows;
    int index;  // in the list
    bool live;
};
__device__ __forceinline__ TileItem tile_item(const MoeGemmParams& p) {
    const int n = *p.num_items, y = blockIdx.y, s = min(p.shared_items_first, n);
    if (y >= n) return TileItem{0, 0, 0, 0, false};
    const int item = y < s ? n - s + y : y - s;
    return TileItem{p.items[3 * item], p.items[3 * item + 1], p.items[3 * item + 2], item, true};
}

// One more in *c, after the stores the calling thread has seen (its own, and its group's past the
// barrier before the call) are visible at GPU scope: what wait_count acquires.
__device__ __forceinline__ void release_count(int* c) {
    __threadfence();
    atomicAdd(c, 1);
}

// An item's gate_up CTA done (MoeGemmParams::item_done): after every thread's stores of its act
// rows (the barrier), thread 0 counts the CTA.
__device__ __forceinline__ void item_done_signal(const MoeGemmParams& p, const TileItem& it) {
    if (p.item_done == nullptr) return;
    __syncthreads();
    if (threadIdx.x == 0) release_count(p.item_done + it.index);
}

// Until *c >= target (release_count's by other CTAs, seen with acquire loads), by the calling
// thread alone.
__device__ __forceinline__ void wait_count(const int* c, int target) {
    int v;
    while (true) {
        asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(c) : "memory");
        if (v >= target) return;
        __nanosleep(64);
    }
}

// Down's CTA waits for its item's gate_up CTAs (all p.item_done_target of them) before it reads
// their act rows; without a target, for gate_up's end (pdl_wait: down is its programmatic
// dependent). Thread 0 polls with acquire loads, then the barrier orders every thread's reads
// after them. Down's CTAs start once every gate_up CTA has started (gate_up releases its
// dependents as it starts), so the CTAs they wait for are already running: no wait can hold
// an SM that a CTA it waits for needs.
__device__ __forceinline__ void item_done_wait(const MoeGemmParams& p, const TileItem& it) {
    if (p.item_done_target <= 0) {
        pdl_wait();
        return;
    }
    if (threadIdx.x == 0) wait_count(p.item_done + it.index, p.item_done_target);
    __syncthreads();
}

// One CTA of THREADS threads (at most 32 warps), thread i holding the counts of experts
// PER i .. PER i + PER - 1 in `c` (0 past the last expert): exclusive scans of the slots and of
// the items over the experts (warp scans, then one warp's scan of the warp totals in `wsum_c` /
// `wsum_i`, shared arrays of THREADS / WARP). Writes offset[e] (shared or global) for e <
// experts, and with `items` non-null the work list and its length (and zeroes the
// MOE_UNIT_COUNTERS counters that follow the length and the list's item counters after them,
// which num_items must have room for: 1 + MOE_UNIT_COUNTERS + the most items). Every thread of
// the CTA calls it (it holds two CTA barriers).
template <int THREADS, int PER>
__device__ __forceinline__ void expert_items(const int (&c)[PER], int experts, int tile_m, int* offset, int* items, int* num_items, int* wsum_c,
                                             int* wsum_i) {
    static_assert(THREADS % WARP == 0 && THREADS / WARP <= WARP, "one warp scans the warp totals");
    constexpr int WARPS = THREADS / WARP;
    const int tid = threadIdx.x, lane = tid % WARP, w = tid / WARP;
    int it[PER], sc = 0, si = 0;
#pragma unroll
    for (int u = 0; u < PER; u++) {
        it[u] = (c[u] + tile_m - 1) / tile_m;
        sc += c[u];
        si += it[u];
    }
    warp_scan2(sc, si);  // inclusive within the warp
    if (lane == WARP - 1) {
        wsum_c[w] = sc;
        wsum_i[w] = si;
    }
    __syncthreads();
    if (w == 0) {  // inclusive scan of the warp totals
        int a = lane < WARPS ? wsum_c[lane] : 0, b = lane < WARPS ? wsum_i[lane] : 0;
        warp_scan2(a, b);
        if (lane < WARPS) {
            wsum_c[lane] = a;
            wsum_i[lane] = b;
        }
    }
    __syncthreads();
    int oc = (w > 0 ? wsum_c[w - 1] : 0) + sc, oi = (w > 0 ? wsum_i[w - 1] : 0) + si;
#pragma unroll
    for (int u = 0; u < PER; u++) {  // back to this thread's first expert
        oc -= c[u];
        oi -= it[u];
    }
#pragma unroll
    for (int u = 0; u < PER; u++) {
        const int e = PER * tid + u;
        if (e < experts) {
            offset[e] = oc;
            if (items != nullptr)
                for (int q = 0; q < it[u]; q++) {
                    items[3 * (oi + q)] = e;
                    items[3 * (oi + q) + 1] = oc + q * tile_m;
                    items[3 * (oi + q) + 2] = min(tile_m, c[u] - q * tile_m);
                }
        }
        oc += c[u];
        oi += it[u];
    }
    if (items != nullptr)
        for (int i = tid; i < wsum_i[WARPS - 1]; i += THREADS) num_items[1 + MOE_UNIT_COUNTERS + i] = 0;
    if (items != nullptr && tid == 0) {
        num_items[0] = wsum_i[WARPS - 1];
        // The expert GEMMs' unit counters after it (MOE_UNIT_COUNTERS), zeroed for this
        // layer's launches.
        for (int i = 1; i <= MOE_UNIT_COUNTERS; i++) num_items[i] = 0;
    }
}

// Down's routing weights of the item rows a thread's C fragments hold where the rows are an
// MMA's n side (row 8j + 2 (lane % 4) + b: wt[j][b], 0 past the item's rows), for the epilogue,
// loaded before its first store: read between the stores, each waited out its own round trip
// (the compiler cannot tell that the bf16 stores leave them alone; the sm_90a SASS).
template <int NJ>
__device__ __forceinline__ void load_n_row_weights(const MoeGemmParams& p, int s0, int rows, float (&wt)[NJ][2]) {
    const int q = threadIdx.x % 4;
#pragma unroll
    for (int j = 0; j < NJ; j++)
#pragma unroll
        for (int b = 0; b < 2; b++) {
            const int r = 8 * j + 2 * q + b;
            wt[j][b] = r < rows ? p.slot_weight[s0 + r] : 0.f;
        }
}
