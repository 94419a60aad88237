// The pick after lm_head: per row, argmax (ties: lowest id) and its softmax probability
// 1 / sum(exp(l - max)). CPU twin: backend::cpu::pick_row. Two forms: row_argmax reads logits a
// cuBLAS GEMM wrote (fewer rows than fill the GPU take a thread block cluster a row; HOPPER_ONLY:
// clusters are sm_90); on sm_90a lm_head_pick (below) is the GEMM itself with the pick in its
// epilogue, and never writes the logits.
#include "common.cuh"
#include <cooperative_groups.h>

namespace cg = cooperative_groups;

// A slice's pick: its max, the max's lowest index and the sum of exp(l - max) over the slice.
struct PickPart {
    float m;
    int i;
    float z;
};
// The pick of no element (a lane past the parts it combines).
#define NO_PICK (PickPart{-FLT_MAX, 0x7fffffff, 0.f})

// The warp's lanes' parts combined, in every lane: the max and its lowest index, then each
// lane's sum moved onto that max.
__device__ __forceinline__ PickPart warp_pick(PickPart s) {
    float m = s.m;
    int mi = s.i;
    warp_argmax(m, mi);
    return PickPart{m, mi, warp_sum(s.z * expf(s.m - m))};
}

// The block's pick over l[begin, end), valid in every lane of warp 0 (the other warps return
// garbage). One pass: each thread keeps its running max, its index and its sum of exp(l - running
// max), rescaled when the max grows (an online softmax); the block then combines the threads'
// (max, index, sum). Two passes (argmax, then the sum against the max) read the row twice from
// memory at batch 64: 2,048 rows of 629 KB leave L2 between them. Each thread sees its elements
// in increasing order, so ties go to the lowest id.
__device__ __forceinline__ PickPart block_pick(const float* __restrict__ l, int begin, int end) {
    constexpr int U = PICK_UNROLL, B = PICK_THREADS, NW = PICK_THREADS / WARP;
    __shared__ float sm[NW], sz[NW];
    __shared__ int si[NW];
    float best = -FLT_MAX, z = 0.f;
    int bi = 0x7fffffff;
    const auto take = [&](float v, int i) {
        if (v > best) {
            z = z * expf(best - v) + 1.f;
            best = v;
            bi = i;
        } else {
            z += expf(v - best);
        }
    };
    // PICK_UNROLL loads in flight a thread before they are used (one at a time, the loop waited a
    // memory latency per element). The rounds that end within the slice go unguarded (a bounds
    // test a load made the one-CTA form 7% slower at batch 64); the last, partial one loads its
    // elements together too, not one latency each.
    int i0 = begin + (int)threadIdx.x;
    for (; i0 + (U - 1) * B < end; i0 += U * B) {
        float v[U];
#pragma unroll
        for (int u = 0; u < U; u++) v[u] = l[i0 + u * B];
#pragma unroll
        for (int u = 0; u < U; u++) take(v[u], i0 + u * B);
    }
    if (i0 < end) {
        float v[U];
#pragma unroll
        for (int u = 0; u < U; u++) v[u] = i0 + u * B < end ? l[i0 + u * B] : 0.f;
#pragma unroll
        for (int u = 0; u < U; u++)
            if (i0 + u * B < end) take(v[u], i0 + u * B);
    }
    // Combine: each warp's threads, then the warps'.
    const PickPart wp = warp_pick(PickPart{best, bi, z});
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    if (lane == 0) {
        sm[w] = wp.m;
        si[w] = wp.i;
        sz[w] = wp.z;
    }
    __syncthreads();
    return warp_pick(lane < NW ? PickPart{sm[lane], si[lane], sz[lane]} : NO_PICK);
}

// Row `row`'s pick into p (thread 0 of the caller).
__device__ __forceinline__ void write_pick(const PickParams& p, int row, const PickPart& r) {
    p.token[row] = (uint32_t)r.i;
    p.prob[row] = 1.f / r.z;
    if (p.share) {
        // The token id as a float is exact below 2^24 (vocabularies are far smaller).
        float* s = p.share + 3 * (size_t)row;
        s[0] = r.m;
        s[1] = (float)(p.token_base + r.i);
        s[2] = r.z;
    }
}

// One CTA a row: from 2 * SMs rows on (batch 8 of 32-token blocks), where the rows fill the GPU.
extern "C" __global__ void __launch_bounds__(PICK_THREADS) row_argmax(const PickParams p) {
    const PickPart r = block_pick(p.logits + (size_t)blockIdx.x * p.vocab, 0, p.vocab);
    if (threadIdx.x == 0) write_pick(p, blockIdx.x, r);
}

// A thread block cluster of C CTAs a row (fewer rows): one CTA a row left most SMs idle, and an
// SM's loads in flight took ~40 us for a 629 KB row (batch 1's step: 32 rows on 32 SMs). CTA r
// reads slice r of the row; rank 0 combines the slices' picks through distributed shared memory
// in rank order (lower slices hold lower ids, so ties still go to the lowest id), which fixes the
// order of the sums whichever CTA finishes first.
template <int C>
__device__ __forceinline__ void row_argmax_cluster(const PickParams& p) {
    cg::cluster_group cluster = cg::this_cluster();
    __shared__ PickPart part;
    const int rank = (int)cluster.block_rank(), row = blockIdx.x / C;
    const int per = (p.vocab + C - 1) / C, begin = min(rank * per, p.vocab), end = min(begin + per, p.vocab);
    const PickPart mine = block_pick(p.logits + (size_t)row * p.vocab, begin, end);
    if (threadIdx.x == 0) part = mine;
    cluster.sync();
    if (rank == 0 && threadIdx.x < WARP) {
        const int lane = threadIdx.x;
        const PickPart r = warp_pick(lane < C ? *cluster.map_shared_rank(&part, lane) : NO_PICK);
        if (lane == 0) write_pick(p, row, r);
    }
    cluster.sync();  // no CTA leaves while rank 0 may still read its part
}

extern "C" __global__ void __cluster_dims__(2, 1, 1) __launch_bounds__(PICK_THREADS) row_argmax_c2(const PickParams p) {
    row_argmax_cluster<2>(p);
}
extern "C" __global__ void __cluster_dims__(4, 1, 1) __launch_bounds__(PICK_THREADS) row_argmax_c4(const PickParams p) {
    row_argmax_cluster<4>(p);
}
extern "C" __global__ void __cluster_dims__(8, 1, 1) __launch_bounds__(PICK_THREADS) row_argmax_c8(const PickParams p) {
    row_argmax_cluster<8>(p);
}

// Two parts of one row combined: the larger max (on equal maxima the lower column), each sum
// moved onto it.
__device__ __forceinline__ PickPart pick_combine(const PickPart& a, const PickPart& b) {
    const float m = fmaxf(a.m, b.m);
    const int i = a.m > b.m ? a.i : b.m > a.m ? b.i : min(a.i, b.i);
    return PickPart{m, i, a.z * __expf(a.m - m) + b.z * __expf(b.m - m)};
}

// ---- the lm_head GEMM with the pick in its epilogue (sm_90a; params.h, LmHeadPickParams) -------
// Greedy rows only need each row's argmax and its probability, so a unit of the GEMM reduces its
// 128 x 256 block of logits in registers to a PickPart a row (its 256 columns), and a second
// launch combines a row's parts: the ~0.6 MB of f32 logits a row are never written or read back.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#include "gemm_tiles.cuh"

// A thread's part of accumulator row `half` (0: rows 16w + lane/4, 1: 8 further) over its 64
// columns of the unit (lo: columns 0..127, hi: 128..255, each as wgmma_m64n128k16_bf16's d),
// whose first column is n0; columns at or past `vocab` are not counted. Its columns are visited
// in increasing order, so the strict > keeps the lowest of equal maxima.
__device__ __forceinline__ PickPart unit_row_part(const float (&lo)[64], const float (&hi)[64], int half, int n0, int vocab) {
    const int q = threadIdx.x % 4;
    float m = -FLT_MAX;
    int mi = 0x7fffffff;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const float(&d)[64] = h ? hi : lo;
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int col = n0 + 128 * h + 8 * j + 2 * q + e;
                const float v = d[4 * j + 2 * half + e];
                if (col < vocab && v > m) {
                    m = v;
                    mi = col;
                }
            }
    }
    float z = 0.f;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const float(&d)[64] = h ? hi : lo;
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int col = n0 + 128 * h + 8 * j + 2 * q + e;
                if (col < vocab) z += __expf(d[4 * j + 2 * half + e] - m);
            }
    }
    return PickPart{m, mi, z};
}

// The units: row tile i % row_tiles of column tile i / row_tiles, all of k.
struct PickWork {
    int row_tiles, ktiles, count;
    __device__ __forceinline__ DenseWork at(int i) const {
        return DenseWork{(i % row_tiles) * DENSE_WS_ROWS, (i / row_tiles) * DENSE_WS_COLS, 0, ktiles};
    }
};

// A unit's epilogue: its rows' parts over its columns, into p.parts.
struct PickEpilogue {
    const LmHeadPickParams& p;
    __device__ __forceinline__ void prepare(const DenseWork&, int, int) {}
    __device__ __forceinline__ void finish(const DenseWork& w, int, int g, const float (&lo)[64], const float (&hi)[64]) {
        const int lane = threadIdx.x % WARP, tile = w.n0 / DENSE_WS_COLS;
        // Each quad's four threads hold a row's 256 columns between them.
#pragma unroll
        for (int half = 0; half < 2; half++) {
            PickPart r = unit_row_part(lo, hi, half, w.n0, p.pick.vocab);
#pragma unroll
            for (int o = 1; o < 4; o <<= 1) {
                const PickPart other{__shfl_xor_sync(0xffffffffu, r.m, o), __shfl_xor_sync(0xffffffffu, r.i, o), __shfl_xor_sync(0xffffffffu, r.z, o)};
                r = pick_combine(r, other);
            }
            const int row = dense_ws_row(w, g, half);
            if (lane % 4 == 0 && row < p.pick.rows) {
                float* dst = p.parts + ((size_t)row * p.col_tiles + tile) * 3;
                dst[0] = r.m;
                dst[1] = __int_as_float(r.i);
                dst[2] = r.z;
            }
        }
    }
};

__device__ __forceinline__ void lm_head_pick_tiles(const LmHeadPickParams& p) {
    const int row_tiles = (p.pick.rows + DENSE_WS_ROWS - 1) / DENSE_WS_ROWS, ktiles = (p.k + GEMM_BK - 1) / GEMM_BK;
    const PickWork work{row_tiles, ktiles, row_tiles * p.col_tiles};
    PickEpilogue epi{p};
    dense_ws_tiles(p.x, p.pick.rows, p.k, p.w_map, work, epi);
}
#endif

extern "C" __global__ void __launch_bounds__(DENSE_WS_THREADS, 1) lm_head_pick(const LmHeadPickParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    lm_head_pick_tiles(p);
#else
    __trap();  // the host launches it only where wgmma is
#endif
}

// A row's parts combined, a warp a row: lane l takes parts l, l + 32, ... (lower tiles hold lower
// columns, and equal maxima keep the lower column), then the warp's lanes. The order of the sums
// is fixed, so a row's pick does not depend on which unit finished first.
extern "C" __global__ void __launch_bounds__(LM_PICK_MERGE_WARPS * WARP) lm_head_pick_merge(const LmHeadPickParams p) {
    const int row = blockIdx.x * LM_PICK_MERGE_WARPS + threadIdx.x / WARP, lane = threadIdx.x % WARP;
    if (row >= p.pick.rows) return;
    const float* parts = p.parts + (size_t)row * p.col_tiles * 3;
    PickPart r = NO_PICK;
    for (int t = lane; t < p.col_tiles; t += WARP) r = pick_combine(r, PickPart{parts[3 * t], __float_as_int(parts[3 * t + 1]), parts[3 * t + 2]});
    r = warp_pick(r);
    if (lane == 0) write_pick(p.pick, row, r);
}
