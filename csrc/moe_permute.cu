// Token <-> expert-slot maps for the grouped GEMMs, and the deterministic combine back.
// moe_permute: the (token, k) picks sorted by expert from the router's counts, and the work list
// of items (expert, first slot, rows <= tile_m).
// moe_combine: y[t] = sum over k (in k order) of the weighted expert rows of token t (+ base[t]).
#include "common.cuh"
#include "moe_items.cuh"
#include "moe_slots.cuh"

// A CTA takes COMBINE_THREADS x COMBINE_COLS columns of one token, a thread COMBINE_COLS of
// them (one 16-byte load of bf16 a slot), with COMBINE_K_UNROLL of its k slot loads issued
// together (slot_sum8: as one guarded loop they went one at a time, the sm_90a SASS). One CTA a token walking its whole row with a load latency per (column, k) took ~16 us
// a call at flash's 4096 columns and 32 tokens. Each column sums its slots in k order in f32,
// then adds to y.
extern "C" __global__ void __launch_bounds__(COMBINE_THREADS) moe_combine(const CombineParams p) {
    static_assert(COMBINE_COLS == 8, "a thread's columns are one uint4 of bf16");
    const int t = blockIdx.x;
    const int c = (blockIdx.y * COMBINE_THREADS + threadIdx.x) * COMBINE_COLS;
    if (c >= p.hidden) return;  // hidden is a multiple of COMBINE_COLS (checked on the host)
    const int32_t* slots = p.tok_slot + (size_t)t * p.topk;
    float r[COMBINE_COLS];
    slot_sum8<COMBINE_K_UNROLL>(p.slot_out, slots, p.topk, p.hidden, c, r);
    float4* y = reinterpret_cast<float4*>(p.y + (size_t)t * p.hidden + c);
    const float4* base = p.base ? reinterpret_cast<const float4*>(p.base + (size_t)t * p.hidden + c) : nullptr;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        float4 o = make_float4(r[4 * h], r[4 * h + 1], r[4 * h + 2], r[4 * h + 3]);
        if (base) {
            const float4 b = base[h];
            o.x += b.x;
            o.y += b.y;
            o.z += b.z;
            o.w += b.w;
        }
        y[h] = o;
    }
}

// ---------------------------------------------------------------------------------------------
// moe_permute, CTAs of 1024 threads, each over PERMUTE_THREADS picks:
// 1. every CTA scans the router's per-expert counts (expert e = thread e): slot offsets and item
//    offsets; CTA 0 writes the work list;
// 2. each pick's slot is its expert's offset + the place the router's atomic gave it.
// The one-CTA version counted and filled by shared-memory atomics itself: ~35 us a call at
// batch 64 (18k picks), a memory latency per 1024 picks in each of two passes on one SM.
// ---------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(PERMUTE_THREADS, 1) moe_permute(const PermuteParams p) {
    __shared__ int offset[PERMUTE_MAX_E];
    __shared__ int wsum_c[PERMUTE_THREADS / WARP], wsum_i[PERMUTE_THREADS / WARP];
    const int tid = threadIdx.x;
    const int n = p.tokens * p.topk;
    // The expert tiles' gate_up after this kernel (a programmatic dependent where no kernel runs
    // beside it, moe.rs) may place its CTAs now: they wait for this kernel's end before they read
    // the work list.
    pdl_release();

    // Slot offsets over experts (experts <= blockDim.x = 1024, checked on the host); CTA 0 writes
    // the work list.
    const int c[1] = {tid < p.experts ? p.counts[tid] : 0};
    const bool writer = blockIdx.x == 0;
    expert_items<PERMUTE_THREADS, 1>(c, p.experts, p.tile_m, offset, writer ? p.items : nullptr, p.num_items, wsum_c, wsum_i);
    __syncthreads();

    // Fill. The order of an expert's slots follows the router's atomics, so it varies from run
    // to run; no result depends on it: a slot's row is computed on its own in the GEMMs, and
    // moe_combine sums a token's slots in k order through tok_slot.
    const int j = blockIdx.x * PERMUTE_THREADS + tid;
    if (j < n) {
        const int s = offset[p.topk_ids[j]] + p.pick_pos[j];
        p.slot_token[s] = j / p.topk;
        p.slot_weight[s] = p.topk_w[j];
        p.tok_slot[j] = s;
    }
}
