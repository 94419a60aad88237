// The pick after lm_head: per row, argmax (ties: lowest id) and its softmax probability
// 1 / sum(exp(l - max)). The logits come from a cuBLAS GEMM into a scratch buffer (a first
// step: a fused GEMM + row-reduce would never write them). CPU twin: backend::cpu::pick_row.
// Fewer rows than fill the GPU take a thread block cluster a row (HOPPER_ONLY: clusters are sm_90).
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
