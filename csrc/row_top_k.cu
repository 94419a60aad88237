// The summaries JointThresholdInDel reads instead of whole logits rows: per row its ROW_TOP_K
// best entries (logit descending, then token id ascending), its max m and z = sum of exp(l - m),
// so a step copies 2K + 2 floats a row back instead of the vocabulary's. One CTA of
// TOP_K_THREADS a row: each thread keeps the best ROW_TOP_K of its strided scan sorted in
// registers; then ROW_TOP_K rounds of a block-wide argmax over the threads' list heads take the
// row's entries in order (the winner's thread drops its head); a second pass sums exp(l - m).
// CPU twin: decode::row_top::row_top.
#include "common.cuh"

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// (v, i) ranks before (w, j): a larger logit, or an equal one with a lower id (warp_argmax's
// rule). A NaN ranks before nothing, so it is never kept (the CPU twin skips it too).
__device__ __forceinline__ bool ranks_before(float v, int i, float w, int j) { return v > w || (v == w && i < j); }

// Put (v, i) into the sorted list (tv, ti) if it ranks before its last entry: carried down the
// list, it takes each slot it ranks before and carries that slot's entry on (static indices, so
// the list stays in registers).
__device__ __forceinline__ void keep_if_better(float (&tv)[ROW_TOP_K], int (&ti)[ROW_TOP_K], float v, int i) {
    if (!ranks_before(v, i, tv[ROW_TOP_K - 1], ti[ROW_TOP_K - 1])) return;
#pragma unroll
    for (int k = 0; k < ROW_TOP_K; k++) {
        if (ranks_before(v, i, tv[k], ti[k])) {
            const float sv = tv[k];
            const int si = ti[k];
            tv[k] = v;
            ti[k] = i;
            v = sv;
            i = si;
        }
    }
}

extern "C" __global__ void __launch_bounds__(TOP_K_THREADS) row_top_k(const RowTopKParams p) {
    constexpr int K = ROW_TOP_K, B = TOP_K_THREADS, NW = TOP_K_THREADS / WARP, U = PICK_UNROLL;
    // An empty slot ranks after every entry, a -inf logit included.
    constexpr int EMPTY = 0x7fffffff;
    __shared__ float head_v[NW];
    __shared__ int head_i[NW];
    __shared__ float scratch[32];
    const float* l = p.logits + (size_t)blockIdx.x * p.vocab;
    float* out = p.summary + (size_t)blockIdx.x * ROW_TOP_SUMMARY;
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;

    float tv[K];
    int ti[K];
#pragma unroll
    for (int k = 0; k < K; k++) {
        tv[k] = neg_inf();
        ti[k] = EMPTY;
    }
    // U loads in flight a thread before they are compared (as row_argmax); each thread still
    // sees its elements in increasing id order.
    int i0 = threadIdx.x;
    for (; i0 + (U - 1) * B < p.vocab; i0 += U * B) {
        float v[U];
#pragma unroll
        for (int u = 0; u < U; u++) v[u] = l[i0 + u * B];
#pragma unroll
        for (int u = 0; u < U; u++) keep_if_better(tv, ti, v[u], i0 + u * B);
    }
    for (int i = i0; i < p.vocab; i += B) keep_if_better(tv, ti, l[i], i);

    // The row's entries in order: each round the best head of all the threads' lists.
    float m = neg_inf();
    for (int k = 0; k < K; k++) {
        float bv = tv[0];
        int bi = ti[0];
        warp_argmax(bv, bi);
        if (lane == 0) {
            head_v[w] = bv;
            head_i[w] = bi;
        }
        __syncthreads();
        // Every warp reduces the warps' heads itself: all threads learn the winner.
        bv = lane < NW ? head_v[lane] : neg_inf();
        bi = lane < NW ? head_i[lane] : EMPTY;
        warp_argmax(bv, bi);
        __syncthreads();  // head_v / head_i are written again next round
        if (bi != EMPTY && ti[0] == bi) {
#pragma unroll
            for (int j = 0; j < K - 1; j++) {
                tv[j] = tv[j + 1];
                ti[j] = ti[j + 1];
            }
            tv[K - 1] = neg_inf();
            ti[K - 1] = EMPTY;
        }
        if (k == 0) m = bv;
        if (threadIdx.x == 0) {
            // The id as a float is exact below 2^24 (vocabularies are far smaller).
            out[2 + k] = bv;
            out[2 + K + k] = bi == EMPTY ? -1.f : (float)(p.token_base + bi);
        }
    }

    const float z = block_sum_exp<U, B>(l, p.vocab, m, scratch);
    if (threadIdx.x == 0) {
        out[0] = m;
        out[1] = z;
    }
}
