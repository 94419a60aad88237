// The sampled pick: decode::sample::sample_row_u on the device (its CPU twin), so that sampled
// decoding never copies logits rows to the host. One thread block cluster of SAMPLE_CLUSTER CTAs
// per row (HOPPER_ONLY: clusters are sm_90).
//
// Why a cluster: a row (157k f32, 629 KB) was read about five times when this kernel took f32 rows
// and five passes. With one CTA a row, a batch-1 step's 32 rows ran on 32 of 132 SMs
// (latency-bound), and at 2048 rows the rows in flight outgrew the 50 MB L2, so that every pass
// read DRAM. A cluster spreads a row over as many SMs, and at large batch SAMPLE_CLUSTER times
// fewer rows are in flight. A sampled step's top-p rows are bf16 and take two passes now, and
// their waves are bound by each row's barriers and dependent latencies more than by re-reads, so
// the cluster is as small as pays (params.h). CTA r of the cluster (its rank) reads slice r of
// the row: contiguous, a multiple of WARP tokens, in token-id order (the last slices shorter or
// empty).
//
// The kept set is a prefix of the row in logit order (larger first, ties: lower id first), so
// each filter is a bar in that order: a logit (as its 32-bit order key) and, among the tokens of
// exactly that logit, the highest id kept. The passes over the row:
//   1      max and argmax (a greedy row then sums exp(l - max), as row_argmax, and is done);
//   3      the top-k bar: radix select of the k-th token by counts (when 0 < top_k < vocab);
//   3      the top-p bar: radix select by mass among the top-k tokens; the first pass's total is
//          their mass z and the target top_p * z (when top_p < 1);
//   (+1)   rarely, a bar that falls among tied logits cuts them in id order;
//   1      the draw: each segment's mass of kept tokens, scans over the segments and the slices,
//          and one warp walking the segment where u times the kept mass falls (the inverse CDF
//          in token-id order).
// min-p needs no pass: its bar is a weight, tested wherever a weight is computed.
// The rows are f32 (sample_rows) or bf16 (sample_rows_bf16, a sampled step's lm_head output: half
// the bytes to write and read); each logit is widened to f32 as it is read, and everything after
// is the same. bf16 rows put many tokens on one value, so the top-p bar usually falls among
// tied tokens: nucleus_draw cuts those from its candidates (candidate_tie_cut), not by a pass.
// A top-p row without top-k (the common knobs) takes two passes instead of five (nucleus_draw):
// the max pass also histograms the first digit, and one pass of the draw's weights confirms its
// bin, keeps the bin's tokens for the last two digits, and sums the draw's segments on the way.
//
// Every reduction is the cluster's: each CTA reduces its slice, publishes the partial in its own
// shared memory, a cluster barrier (release / acquire), and every CTA reads all the partials
// through distributed shared memory and combines them in rank order. So every CTA computes the
// same bits and takes the same branches (it must: a cluster barrier waits for every thread of
// the cluster). A published value is rewritten only after a later cluster barrier that every
// reader reaches after its read, and a CTA leaves only after a last barrier: a peer may be
// reading its shared memory until then.
#include "common.cuh"
#include <cooperative_groups.h>

namespace cg = cooperative_groups;

#define FULL_MASK 0xffffffffu

// The tokens of key > key, and those of key == key with id <= id_cut.
struct Bar {
    uint32_t key;
    int id_cut;
};
__device__ __forceinline__ bool within(const Bar& b, uint32_t key, int i) { return key > b.key || (key == b.key && i <= b.id_cut); }
// Every token (every key is >= 0).
__device__ __forceinline__ Bar no_bar() { return Bar{0u, 0x7fffffff}; }

// The tokens [begin, end) of the row that this CTA reads.
struct Slice {
    int begin, end;
};

struct SampleSmem {
    // Radix select, one histogram and one set of group sums per pass, read by the whole cluster:
    // a pass never clears what a peer may still be reading of the pass before (radix_select).
    // Each pass's bins hold floats (mass) or integers (counts: the top-k select; nucleus_draw's
    // fixed-point weights). Integers where they do: a float atomicAdd on shared memory is a
    // compare-and-swap loop, which the few hot bins of a row serialise; an integer add is one
    // atomic.
    union {
        float hist0[1 << SAMPLE_DIGIT0];  // this slice's quantity per bin
        uint32_t ihist0[1 << SAMPLE_DIGIT0];
    };
    union {
        float hist1[1 << SAMPLE_DIGIT];
        uint32_t ihist1[1 << SAMPLE_DIGIT];
    };
    union {
        float hist2[1 << SAMPLE_DIGIT];
        uint32_t ihist2[1 << SAMPLE_DIGIT];
    };
    unsigned ties[1 << SAMPLE_DIGIT];  // the last pass's token count per bin (a bar among ties)
    float group[3][SAMPLE_THREADS];    // each pass: thread t's bins summed over this slice
    float seg[SAMPLE_THREADS];         // the draw: each segment's quantity
    // The nucleus in two passes (nucleus_draw): each segment's kept mass above the first digit's
    // bin, and this slice's tokens in that bin (value, id), up to SAMPLE_CANDIDATES of them.
    float seg_above[SAMPLE_THREADS];
    float cand_v[SAMPLE_CANDIDATES];
    int cand_i[SAMPLE_CANDIDATES];
    int ncand;
    // Read by the cluster: this slice's total weight, the weight above the bin and in it, and
    // its candidate count (over SAMPLE_CANDIDATES: some did not fit).
    float pass_z, pass_above, pass_bin;
    int pass_n;
    float scratch[WARP];
    uint32_t warp_key[SAMPLE_THREADS / WARP];
    int warp_id[SAMPLE_THREADS / WARP];
    // Read by the cluster: the slice's max key and its first index; the slice's sum (the greedy
    // z, an id select's total); an id select's token and its q (in the CTA holding the target).
    uint32_t max_key;
    int max_id;
    float part;
    int found;
    float found_q;
    // Read by the cluster: a candidate tie cut's count of this slice's tied tokens, and the
    // owner's cut (candidate_tie_cut).
    int tie_count, tie_id;
    // This CTA's only.
    int claim, last;  // the thread (group or segment) the target falls in; the last non-empty
    int bin;          // radix: the chosen bin
    float group_before, before;  // the quantity ahead of the chosen group; of the bin or segment
    float tie_q;      // radix, last pass: the chosen bin's quantity and token count (the cluster's)
    unsigned tie_n;
};

// Max key over the warp with its index; ties go to the lower index.
__device__ __forceinline__ void warp_max_key(uint32_t& k, int& i) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const uint32_t ok = __shfl_xor_sync(FULL_MASK, k, o);
        const int oi = __shfl_xor_sync(FULL_MASK, i, o);
        if (ok > k || (ok == k && oi < i)) {
            k = ok;
            i = oi;
        }
    }
}

// Prefix sums of one value a thread in thread order: exclusive, inclusive, and the block total.
__device__ __forceinline__ void block_scan(float v, float* scratch, float& excl, float& incl, float& total) {
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = blockDim.x / WARP;
    const float x = warp_scan(v);
    float prev = __shfl_up_sync(FULL_MASK, x, 1);
    if (lane == 0) prev = 0.f;
    __syncthreads();  // a previous scan may still read scratch
    if (lane == WARP - 1) scratch[w] = x;
    __syncthreads();
    const float t = warp_scan(lane < nw ? scratch[lane] : 0.f);
    float off = __shfl_sync(FULL_MASK, t, w > 0 ? w - 1 : 0);
    if (w == 0) off = 0.f;
    total = __shfl_sync(FULL_MASK, t, nw - 1);
    // Consecutive threads of a warp share their boundary value exactly, so a target falls in
    // one thread's [excl, incl) there; across warps a rounding gap is left to the callers.
    excl = off + prev;
    incl = off + x;
}

// The sum over the cluster of the value that every CTA holds at `mine` (one variable of the
// shared memory), as floats in rank order: every CTA gets the same bits.
template <class T>
__device__ __forceinline__ float cluster_sum(cg::cluster_group& cluster, T* mine) {
    float v[SAMPLE_CLUSTER];
#pragma unroll
    for (int r = 0; r < SAMPLE_CLUSTER; r++) v[r] = (float)*cluster.map_shared_rank(mine, r);  // all in flight
    float s = v[0];
#pragma unroll
    for (int r = 1; r < SAMPLE_CLUSTER; r++) s += v[r];
    return s;
}

// A row of logits as f32 (sample_rows) or bf16 (sample_rows_bf16: a sampled step's lm_head
// writes half the bytes, and every pass reads half): PACK tokens a 16-byte load, widened to f32
// (exact) where they are read, so that every pass, bar and draw works on the same f32 values.
template <class LT>
struct Logits;
template <>
struct Logits<float> {
    static constexpr int PACK = 4;
    static __device__ __forceinline__ float at(const float* l, int i) { return l[i]; }
    // The PACK tokens from i as one vector, 0 from `end` on (any alignment).
    static __device__ __forceinline__ uint4 load_partial(const float* l, int i, int end) {
        uint32_t w[PACK];
#pragma unroll
        for (int t = 0; t < PACK; t++) w[t] = i + t < end ? __float_as_uint(l[i + t]) : 0u;
        return make_uint4(w[0], w[1], w[2], w[3]);
    }
    static __device__ __forceinline__ void unpack(uint4 u, float (&v)[PACK]) {
        v[0] = __uint_as_float(u.x);
        v[1] = __uint_as_float(u.y);
        v[2] = __uint_as_float(u.z);
        v[3] = __uint_as_float(u.w);
    }
};
template <>
struct Logits<bf16> {
    static constexpr int PACK = 8;
    static __device__ __forceinline__ float at(const bf16* l, int i) { return bf2f(l[i]); }
    static __device__ __forceinline__ uint4 load_partial(const bf16* l, int i, int end) {
        const unsigned short* h = reinterpret_cast<const unsigned short*>(l);
        uint32_t w[PACK / 2];
#pragma unroll
        for (int j = 0; j < PACK / 2; j++) {
            const uint32_t lo = i + 2 * j < end ? h[i + 2 * j] : 0u, hi = i + 2 * j + 1 < end ? h[i + 2 * j + 1] : 0u;
            w[j] = lo | (hi << 16);
        }
        return make_uint4(w[0], w[1], w[2], w[3]);
    }
    // A bf16 is the top half of its f32 (the lower id in the lower half of each word).
    static __device__ __forceinline__ void unpack(uint4 u, float (&v)[PACK]) {
        const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            v[2 * j] = __uint_as_float(w[j] << 16);
            v[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
        }
    }
};

// f(i, l[i]) over the slice, SAMPLE_UNROLL / 4 16-byte loads in flight a thread, each thread's
// tokens in increasing id. The last round's loads are predicated rather than left to a tail loop,
// which would wait out a load latency per token. Where the slice starts 16-byte aligned (a row
// of a multiple of 4 f32 or 8 bf16 tokens: mini's) the loads are 16-byte vectors, a quarter (f32)
// or an eighth (bf16) of the load and index instructions.
template <class LT, class F>
__device__ __forceinline__ void for_slice(const LT* __restrict__ l, Slice sl, F f) {
    using L = Logits<LT>;
    constexpr int B = SAMPLE_THREADS, P = L::PACK, UV = SAMPLE_UNROLL / 4;
    if ((reinterpret_cast<uintptr_t>(l + sl.begin) & 15) == 0) {
        const int nv = (sl.end - sl.begin) / P;
        const uint4* lv = reinterpret_cast<const uint4*>(l + sl.begin);
        auto take = [&](int j, uint4 raw) {
            float v[P];
            L::unpack(raw, v);
            const int i = sl.begin + P * j;
#pragma unroll
            for (int t = 0; t < P; t++) f(i + t, v[t]);
        };
        int j0 = threadIdx.x;
        // Whole rounds without a check a vector (the checks cost a branch a vector, and kept the
        // shared-memory window's base from being hoisted out of f).
        for (; j0 + (UV - 1) * B < nv; j0 += UV * B) {
            uint4 v[UV];
#pragma unroll
            for (int u = 0; u < UV; u++) v[u] = lv[j0 + u * B];
#pragma unroll
            for (int u = 0; u < UV; u++) take(j0 + u * B, v[u]);
        }
        if (j0 < nv) {  // the last round, predicated
            uint4 v[UV];
#pragma unroll
            for (int u = 0; u < UV; u++) v[u] = j0 + u * B < nv ? lv[j0 + u * B] : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
            for (int u = 0; u < UV; u++)
                if (j0 + u * B < nv) take(j0 + u * B, v[u]);
        }
        for (int i = sl.begin + P * nv + threadIdx.x; i < sl.end; i += B) f(i, L::at(l, i));  // a last slice's odd end
        return;
    }
    constexpr int U = SAMPLE_UNROLL;
    for (int i0 = sl.begin + threadIdx.x; i0 < sl.end; i0 += U * B) {
        float v[U];
#pragma unroll
        for (int u = 0; u < U; u++) v[u] = i0 + u * B < sl.end ? L::at(l, i0 + u * B) : 0.f;
#pragma unroll
        for (int u = 0; u < U; u++)
            if (i0 + u * B < sl.end) f(i0 + u * B, v[u]);
    }
}

// The first token in id order at which the running sum of q (>= 0) over the row exceeds
// target = frac * (total of q) + add, its q, and the total; the same on every CTA of the cluster.
// A target at or past the total (rounding) takes the last token with q > 0. Each slice is cut
// into at most SAMPLE_THREADS segments of seg_len (whole pieces of PACK x WARP) tokens, segment t
// thread t's in the scans; each segment's sum is a warp sum (warp_segment_sums). The slices'
// totals, in rank order, say which slice holds the target; that CTA alone scans its segments and
// walks one, and the others read what it found.
struct Found {
    int id;
    float q, total;
};

// A segment's length: at most SAMPLE_THREADS segments cover the slice, each of whole pieces of
// PACK x WARP tokens (a 16-byte vector a lane: 4 f32 or 8 bf16 tokens).
template <class LT>
__device__ __forceinline__ int segment_len(Slice sl) {
    constexpr int P = Logits<LT>::PACK * WARP, N = SAMPLE_THREADS * P;
    return (sl.end - sl.begin + N - 1) / N * P;
}

template <class LT, class Q>
__device__ Found id_select_segments(const LT* __restrict__ l, Slice sl, Q q, float frac, float add, float mine, SampleSmem& sm,
                                    cg::cluster_group& cluster);

// The sum of q(i, l[i]) over each segment of the slice into out[segment], for all SAMPLE_THREADS
// segments (0 past the slice's end). Warp w takes segments w, w + NW, ..., S of them at a time
// (SAMPLE_SEGMENT_LOADS f32 segments, half as many bf16 ones: the same tokens, in the 64
// registers), a piece of PACK x WARP tokens of each in flight (a 16-byte vector a lane where the
// slice starts 16-byte aligned: then so does every segment), and sums a piece's PACK tokens a
// lane before the warp sums the segment. q may keep other sums on the way (nucleus_draw's second
// pass). The loads are all issued before any q: with q's branches (and its shared-memory stores)
// between them, the compiler issued each load after the previous token's q, one in flight a lane.
template <class LT, class Q>
__device__ __forceinline__ void warp_segment_sums(const LT* __restrict__ l, Slice sl, int seg_len, Q q, float* out) {
    using L = Logits<LT>;
    constexpr int NW = SAMPLE_THREADS / WARP, P = L::PACK, S = SAMPLE_SEGMENT_LOADS * 4 / P;
    static_assert(SAMPLE_THREADS % (NW * S) == 0, "whole groups of segments");
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    const bool vec = (reinterpret_cast<uintptr_t>(l + sl.begin) & 15) == 0;
    const int used = seg_len > 0 ? (sl.end - sl.begin + seg_len - 1) / seg_len : 0;  // segments holding tokens
#pragma unroll 1
    for (int s0 = w; s0 < SAMPLE_THREADS; s0 += NW * S) {
        float acc[S];
#pragma unroll
        for (int u = 0; u < S; u++) acc[u] = 0.f;
        for (int piece = 0; s0 < used && piece < seg_len; piece += P * WARP) {
            uint4 raw[S];
#pragma unroll
            for (int u = 0; u < S; u++) {
                const int i = sl.begin + (s0 + u * NW) * seg_len + piece + P * lane;
                raw[u] = vec && i + P - 1 < sl.end ? *reinterpret_cast<const uint4*>(l + i) : L::load_partial(l, i, sl.end);
            }
#pragma unroll
            for (int u = 0; u < S; u++) {
                const int i = sl.begin + (s0 + u * NW) * seg_len + piece + P * lane;
                float v[P];
                L::unpack(raw[u], v);
                if (i + P - 1 < sl.end) {
                    float a = 0.f;
#pragma unroll
                    for (int t = 0; t < P; t += 2) a += q(i + t, v[t]) + q(i + t + 1, v[t + 1]);
                    acc[u] += a;
                } else {
#pragma unroll
                    for (int t = 0; t < P - 1; t++)
                        if (i + t < sl.end) acc[u] += q(i + t, v[t]);
                }
            }
        }
#pragma unroll
        for (int u = 0; u < S; u++) {
            const float tot = warp_sum(acc[u]);
            if (lane == 0) out[s0 + u * NW] = tot;
        }
    }
}

template <class LT, class Q>
__device__ Found id_select(const LT* __restrict__ l, Slice sl, Q q, float frac, float add, SampleSmem& sm, cg::cluster_group& cluster) {
    warp_segment_sums(l, sl, segment_len<LT>(sl), q, sm.seg);
    __syncthreads();
    return id_select_segments(l, sl, q, frac, add, sm.seg[threadIdx.x], sm, cluster);
}

// Where the target of an id select lies once each segment's sum of q is known (`mine`: segment
// threadIdx.x's): the slices' totals in rank order give the row's total and the slice (`owner`)
// the target falls in, and where in it (`local`); the same on every CTA. Past the total
// (rounding): the last non-empty slice, whose last token with q > 0 an infinite target takes (as
// it takes the last non-empty segment). owner < 0: nothing has q > 0.
struct Located {
    int owner;
    float local, total, excl, incl;  // excl, incl: this thread's segment's running sums in the slice
};
__device__ Located locate_target(float frac, float add, float mine, SampleSmem& sm, cg::cluster_group& cluster) {
    if (threadIdx.x == 0) {
        sm.claim = SAMPLE_THREADS;
        sm.last = -1;
    }
    __syncthreads();
    Located at;
    float slice_total;
    block_scan(mine, sm.scratch, at.excl, at.incl, slice_total);
    if (threadIdx.x == 0) sm.part = slice_total;
    cluster.sync();  // every slice's total is out
    float part[SAMPLE_CLUSTER];
#pragma unroll
    for (int r = 0; r < SAMPLE_CLUSTER; r++) part[r] = *cluster.map_shared_rank(&sm.part, r);
    at.total = 0.f;
#pragma unroll
    for (int r = 0; r < SAMPLE_CLUSTER; r++) at.total += part[r];
    const float target = frac * at.total + add;
    int owner = -1, last = -1;
    float start = 0.f, cum = 0.f;
#pragma unroll
    for (int r = 0; r < SAMPLE_CLUSTER; r++) {
        if (part[r] > 0.f) {
            if (owner < 0 && cum <= target && target < cum + part[r]) {
                owner = r;
                start = cum;
            }
            last = r;
        }
        cum += part[r];
    }
    at.local = owner >= 0 ? target - start : INFINITY;
    at.owner = owner >= 0 ? owner : last;
    return at;
}

// The owner's part of an id select (every thread of the owning CTA calls it): the segment the
// target falls in, and warp 0 walking it into sm.found and sm.found_q.
template <class LT, class Q>
__device__ void walk_to_target(const LT* __restrict__ l, Slice sl, Q q, float mine, const Located& at, SampleSmem& sm) {
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    const int seg_len = segment_len<LT>(sl);
    if (mine > 0.f) {
        if (at.excl <= at.local && at.local < at.incl) atomicMin(&sm.claim, (int)threadIdx.x);
        atomicMax(&sm.last, (int)threadIdx.x);
    }
    __syncthreads();
    const int seg = sm.claim < SAMPLE_THREADS ? sm.claim : sm.last;  // >= 0: the slice has q > 0
    if ((int)threadIdx.x == seg) sm.before = sm.claim < SAMPLE_THREADS ? at.local - at.excl : INFINITY;
    __syncthreads();
    if (w == 0) {
        // Walk the segment 32 tokens at a time; a rounding miss falls back on its last q > 0.
        const float r = sm.before;
        const int begin = sl.begin + seg * seg_len, end = min(begin + seg_len, sl.end);
        float run = 0.f, last_q = 0.f;
        int found = -1, last_id = -1;
        for (int base = begin; base < end && found < 0; base += WARP) {
            const int i = base + lane;
            const float x = i < end ? q(i, Logits<LT>::at(l, i)) : 0.f;
            const float c = warp_scan(x);
            const unsigned hit = __ballot_sync(FULL_MASK, x > 0.f && run + c > r);
            const unsigned pos = __ballot_sync(FULL_MASK, x > 0.f);
            if (hit) {
                const int f = __ffs(hit) - 1;
                found = base + f;
                last_q = __shfl_sync(FULL_MASK, x, f);
            } else if (pos) {
                const int f = 31 - __clz(pos);
                last_id = base + f;
                last_q = __shfl_sync(FULL_MASK, x, f);
            }
            run += __shfl_sync(FULL_MASK, c, WARP - 1);
        }
        if (lane == 0) {
            sm.found = found >= 0 ? found : last_id;
            sm.found_q = last_q;
        }
    }
}

// id_select once each segment's sum of q is known (`mine`: segment threadIdx.x's): the slice
// that holds the target, and there the segment and the token.
template <class LT, class Q>
__device__ Found id_select_segments(const LT* __restrict__ l, Slice sl, Q q, float frac, float add, float mine, SampleSmem& sm,
                                    cg::cluster_group& cluster) {
    const Located at = locate_target(frac, add, mine, sm, cluster);
    if ((int)cluster.block_rank() == at.owner) walk_to_target(l, sl, q, mine, at, sm);
    cluster.sync();  // the owner's token is out (and every CTA is done reading sm.part)
    if (at.owner < 0) return Found{-1, 0.f, at.total};  // nothing has q > 0 (the callers never ask so)
    return Found{*cluster.map_shared_rank(&sm.found, at.owner), *cluster.map_shared_rank(&sm.found_q, at.owner), at.total};
}

// The draw's id select, its pick written by the CTA that finds it (no barrier to hand the token
// round the cluster), and the cluster's last barrier split around that CTA's walk: each CTA
// arrives once done reading its peers' totals and leaves when all have. False (nothing has
// q > 0): nothing written, no barrier taken after the totals'.
template <class LT, class Q>
__device__ bool id_draw(const LT* __restrict__ l, Slice sl, Q q, float u, float mine, uint32_t* token, float* prob, SampleSmem& sm,
                        cg::cluster_group& cluster) {
    const Located at = locate_target(u, 0.f, mine, sm, cluster);
    if (at.owner < 0) return false;
    cluster.barrier_arrive();  // done with the peers' shared memory
    if ((int)cluster.block_rank() == at.owner) {
        walk_to_target(l, sl, q, mine, at, sm);
        __syncthreads();
        if (threadIdx.x == 0) {
            *token = (uint32_t)sm.found;
            *prob = sm.found_q / at.total;
        }
    }
    cluster.barrier_wait();  // no CTA leaves while a peer may still read its shared memory
    return true;
}

// The bar of the first token in logit order at which the running sum of q (>= 0; q = 1 counts
// tokens, q = weight sums mass) over the row reaches target = frac * (total of q) + add, the
// total known after the first pass. Radix select over the keys, most significant digit first:
// each pass histograms q over the next digit among the tokens that match the digits chosen so
// far, and takes the bin the target falls in. Ties at the final key are cut in id order by
// id_select.
//
// The cluster's histogram is never gathered whole (every CTA reading every peer's bins would
// move the histogram SAMPLE_CLUSTER^2 times through distributed shared memory): thread t owns
// a group of c bins from the top down (thread order is logit order) and publishes their sum over
// its slice; the CTAs sum each group over the cluster, scan the groups, and one warp then sums
// only the chosen group's c bins over the cluster to find the bin.
//
// Pass d of every select has its own arrays: pass d of the next select rewrites them only after
// the barrier of a pass in between, which every peer reaches after its reads of them.

// Where a digit's select starts: the digits chosen before it (prefix under mask), the quantity
// of the tokens above them in logit order, and the target (set by digit 0 from its total).
struct RadixStart {
    int digit;
    uint32_t prefix, mask;
    float above, target;
};
__device__ __forceinline__ int digit_bits(int d) { return d == 0 ? SAMPLE_DIGIT0 : SAMPLE_DIGIT; }
__device__ __forceinline__ int digit_shift(int d) { return d == 0 ? 32 - SAMPLE_DIGIT0 : d == 1 ? SAMPLE_DIGIT : 0; }

// A digit's chosen bin over the cluster, after its histogram pass: hist holds this slice's
// quantity per bin, each bin worth scale(b) times it (the same factor on every CTA; 1 but for
// nucleus_draw's first digit, whose bins sum weights relative to their own top). need(total)
// is the quantity the digit must reach, from the digit's total over the cluster. bin < 0: the
// quantity is 0 everywhere. Ends on a CTA barrier: sm.claim, sm.bin, sm.before are free again.
struct Chosen {
    int bin;
    float before;   // the quantity of the bins above it
    float total;    // the digit's total
    float bin_q;    // count_ties: the bin's quantity and token count
    unsigned bin_n;
};
// A digit's choice comes in two halves around the cluster barrier that publishes the slices'
// histograms: radix_publish sums thread t's group of bins into group[t] (and readies sm.claim),
// radix_pick chooses the bin from every slice's. A barrier that publishes something else too
// may stand between them (nucleus_draw's digits: the max pass's, the second pass's).
template <class T, class Scale>
__device__ void radix_publish(SampleSmem& sm, const T* hist, float* group, int nb, Scale scale) {
    if (threadIdx.x == 0) {
        sm.claim = SAMPLE_THREADS;
        sm.last = -1;
    }
    const int c = nb / SAMPLE_THREADS, top = nb - 1 - threadIdx.x * c;  // thread t's bins: top, top - 1, ..
    // An empty bin adds 0 whatever its scale (which may overflow above the row's max).
    float own = 0.f;
    for (int j = 0; j < c; j++) {
        const float h = (float)hist[top - j];
        own += h > 0.f ? scale(top - j) * h : 0.f;
    }
    group[threadIdx.x] = own;
}

// group_sum(): thread t's group over the cluster (every slice's group[t] added in rank order,
// each at its slice's scale).
template <class T, class Scale, class Need, class GroupSum>
__device__ Chosen radix_pick(SampleSmem& sm, cg::cluster_group& cluster, T* hist, int nb, bool count_ties, Scale scale, Need need_of,
                             GroupSum group_sum) {
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    const int c = nb / SAMPLE_THREADS;
    auto worth = [&](int b, float h) { return h > 0.f ? scale(b) * h : 0.f; };
    const float g = group_sum();
    float excl, incl, total;
    block_scan(g, sm.scratch, excl, incl, total);
    const float need = need_of(total);
    if (g > 0.f) {
        if (incl >= need) atomicMin(&sm.claim, (int)threadIdx.x);
        atomicMax(&sm.last, (int)threadIdx.x);
    }
    __syncthreads();
    // A target past the total (rounding) keeps everything: the lowest non-empty group.
    const int chosen = sm.claim < SAMPLE_THREADS ? sm.claim : sm.last;
    if (chosen < 0) {
        __syncthreads();
        return Chosen{-1, 0.f, total, 0.f, 0u};
    }
    if ((int)threadIdx.x == chosen) sm.group_before = excl;
    __syncthreads();
    if (w == 0) {
        // The chosen group's bins over the cluster, lane j holding bin gtop - j (logit order).
        const int gtop = nb - 1 - chosen * c;
        const float h = lane < c ? worth(gtop - lane, cluster_sum(cluster, &hist[gtop - lane])) : 0.f;
        const float cum = warp_scan(h);
        float ahead = __shfl_up_sync(FULL_MASK, cum, 1);
        if (lane == 0) ahead = 0.f;
        const float base = sm.group_before;
        const unsigned hit = __ballot_sync(FULL_MASK, h > 0.f && base + cum >= need);
        const unsigned pos = __ballot_sync(FULL_MASK, h > 0.f);  // not 0: the group's sum is > 0
        // A miss (the group's sum and its bins' round apart, or the target is past the
        // total) takes the group's lowest non-empty bin.
        const int f = hit ? __ffs(hit) - 1 : 31 - __clz(pos);
        const float before = base + __shfl_sync(FULL_MASK, ahead, f);
        const float hf = __shfl_sync(FULL_MASK, h, f);
        if (lane == 0) {
            sm.bin = gtop - f;
            sm.before = before;
            if (count_ties) {
                unsigned n = 0;
#pragma unroll
                for (int r = 0; r < SAMPLE_CLUSTER; r++) n += *cluster.map_shared_rank(&sm.ties[gtop - f], r);
                sm.tie_q = hf;
                sm.tie_n = n;
            }
        }
    }
    __syncthreads();
    const Chosen out{sm.bin, sm.before, total, sm.tie_q, sm.tie_n};
    __syncthreads();  // sm.claim, sm.bin, sm.before are rewritten by the next pass
    return out;
}

template <class T, class Scale, class Need>
__device__ Chosen radix_choose(SampleSmem& sm, cg::cluster_group& cluster, T* hist, float* group, int nb, bool count_ties,
                               Scale scale, Need need_of) {
    radix_publish(sm, hist, group, nb, scale);
    cluster.sync();  // every slice's histogram and group sums are out (and sm.claim is set)
    return radix_pick(sm, cluster, hist, nb, count_ties, scale, need_of, [&] { return cluster_sum(cluster, &group[threadIdx.x]); });
}

// radix_select from the digit `st` names on, over the tokens `each` visits (each(f) calls
// f(i, l[i]) for every token of the slice that may match: the row's slice, or candidates).
// COUNTS: q is 1 or 0 (a count), histogrammed in the integer bins.
// The id of the keep-th (from 1) tied token in id order over the row, when `each` visits
// nucleus_draw's candidates: every token of the first digit's bin, so every token of the bar's
// key, is among its slice's candidates, and the slices lie in id order by rank. So the slices'
// counts of tied tokens say which slice holds it, and that CTA ranks its own tied candidates by
// id (they are few: a bar's key is one logit value), instead of a pass over the row in id order
// (id_select), which bf16 rows (many tokens a value) took at most bars.
template <class Tied>
__device__ int candidate_tie_cut(Tied tied, int keep, SampleSmem& sm, cg::cluster_group& cluster) {
    const int n = min(sm.ncand, SAMPLE_CANDIDATES);
    float mine = 0.f;
    for (int j = threadIdx.x; j < n; j += SAMPLE_THREADS) mine += tied(sm.cand_i[j], sm.cand_v[j]) ? 1.f : 0.f;
    mine = block_sum(mine, sm.scratch);  // at most SAMPLE_CANDIDATES: exact
    if (threadIdx.x == 0) sm.tie_count = (int)mine;
    cluster.sync();  // every slice's count is out
    int owner = -1, local = 0, before = 0;
#pragma unroll
    for (int r = 0; r < SAMPLE_CLUSTER; r++) {
        const int c = *cluster.map_shared_rank(&sm.tie_count, r);
        if (owner < 0 && before + c >= keep) {
            owner = r;
            local = keep - before;
        }
        before += c;
    }
    // The counts came from the same tokens the bar's ties were counted over: owner >= 0.
    if ((int)cluster.block_rank() == owner) {
        // The tied ids, compacted (the last digit's histogram is free: no peer reads it after
        // the barrier above), then the one with local - 1 tied ids below it.
        __syncthreads();
        if (threadIdx.x == 0) sm.claim = 0;
        __syncthreads();
        for (int j = threadIdx.x; j < n; j += SAMPLE_THREADS)
            if (tied(sm.cand_i[j], sm.cand_v[j])) sm.ihist2[atomicAdd(&sm.claim, 1)] = (uint32_t)sm.cand_i[j];
        __syncthreads();
        const int nt = sm.claim;
        for (int j = threadIdx.x; j < nt; j += SAMPLE_THREADS) {
            const uint32_t id = sm.ihist2[j];
            int below = 0;
            for (int m = 0; m < nt; m++) below += sm.ihist2[m] < id;
            if (below == local - 1) sm.tie_id = (int)id;
        }
    }
    cluster.sync();  // the owner's cut is out
    return owner >= 0 ? *cluster.map_shared_rank(&sm.tie_id, owner) : 0x7fffffff;
}

template <bool COUNTS, bool CANDIDATES, class LT, class Each, class Q>
__device__ Bar radix_select_from(const LT* __restrict__ l, Slice sl, Each each, Q q, RadixStart st, float frac, float add,
                                 SampleSmem& sm, cg::cluster_group& cluster) {
    uint32_t prefix = st.prefix, mask = st.mask;
    float above = st.above, target = st.target, tie_q = 0.f;
    unsigned tie_n = 0;
#pragma unroll 1
    for (int d = st.digit; d < 3; d++) {
        const int shift = digit_shift(d), nb = 1 << digit_bits(d);
        const bool last = d == 2;
        float* hist = d == 0 ? sm.hist0 : d == 1 ? sm.hist1 : sm.hist2;
        uint32_t* ihist = d == 0 ? sm.ihist0 : d == 1 ? sm.ihist1 : sm.ihist2;
        for (int b = threadIdx.x; b < nb; b += SAMPLE_THREADS) {
            if constexpr (COUNTS) {
                ihist[b] = 0u;
            } else {
                hist[b] = 0.f;
            }
            if (last) sm.ties[b] = 0u;
        }
        __syncthreads();
        each([&](int i, float v) {
            const uint32_t k = order_key(v);
            if ((k & mask) != prefix) return;
            const float x = q(i, v);
            if (x > 0.f) {
                const int b = (k >> shift) & (nb - 1);
                if constexpr (COUNTS) {
                    atomicAdd(&ihist[b], 1u);
                } else {
                    atomicAdd(&hist[b], x);
                }
                if (last) atomicAdd(&sm.ties[b], 1u);
            }
        });
        __syncthreads();
        auto need_of = [&](float total) {
            if (d == 0) target = frac * total + add;
            return target - above;
        };
        auto one = [](int) { return 1.f; };
        Chosen ch;
        if constexpr (COUNTS) {
            ch = radix_choose(sm, cluster, ihist, sm.group[d], nb, last, one, need_of);
        } else {
            ch = radix_choose(sm, cluster, hist, sm.group[d], nb, last, one, need_of);
        }
        if (ch.bin < 0) {
            // q is 0 everywhere (the callers never ask so). The barrier stands in for the passes
            // left out, after which the next select may rewrite what the peers read here.
            cluster.sync();
            return no_bar();
        }
        above += ch.before;
        prefix |= (uint32_t)ch.bin << shift;
        mask |= (uint32_t)(nb - 1) << shift;
        if (last) {
            tie_q = ch.bin_q;
            tie_n = ch.bin_n;
        }
    }
    // The ties at the key all weigh the same: keep as many as the target still needs.
    const float unit = tie_q / (float)tie_n;
    int keep = (int)ceilf((target - above) / unit);
    keep = max(1, min(keep, (int)tie_n));
    if (keep == (int)tie_n) return Bar{prefix, 0x7fffffff};
    const uint32_t key = prefix;
    auto tied = [&](int i, float v) { return order_key(v) == key && q(i, v) > 0.f; };
    if constexpr (CANDIDATES) {
        return Bar{key, candidate_tie_cut(tied, keep, sm, cluster)};
    } else {
        const Found f = id_select(l, sl, [&](int i, float v) { return tied(i, v) ? 1.f : 0.f; }, 0.f, keep - 0.5f, sm, cluster);
        return Bar{key, f.id};
    }
}

template <bool COUNTS = false, class LT, class Q>
__device__ Bar radix_select(const LT* __restrict__ l, Slice sl, Q q, float frac, float add, SampleSmem& sm, cg::cluster_group& cluster) {
    return radix_select_from<COUNTS, false>(
        l, sl, [&](auto f) { for_slice(l, sl, f); }, q, RadixStart{0, 0u, 0u, 0.f, 0.f}, frac, add, sm, cluster);
}

// The largest float whose order key lies in the first digit's bin b (its top, a finite value for
// a bin of finite floats).
__device__ __forceinline__ float bin_top(int b) {
    constexpr int shift = 32 - SAMPLE_DIGIT0;
    return key_value(((uint32_t)b << shift) | ((1u << shift) - 1u));
}

// nucleus_draw's guide: what a unit of first-digit bin b's fixed-point count weighs against the
// max m, exp((top - m) / t) / qscale (the max pass adds each token's weight against its bin's top,
// times qscale). Each slice publishes its groups against its own max, the pick reads them against
// the row's: one formula for both.
__device__ __forceinline__ auto guide_bin_scale(float m, float inv_t, float qscale) {
    return [=](int b) { return expf((bin_top(b) - m) * inv_t) / qscale; };
}

// The draw under any knobs (top-k first, then the nucleus within it, then min-p): a radix select
// over the row for each bar, then the draw's pass.
template <class LT, class W>
__device__ Found general_draw(const LT* __restrict__ l, Slice sl, const RowSampling& s, int vocab, float min_p, W weight,
                              SampleSmem& sm, cg::cluster_group& cluster) {
    Bar top_k = no_bar();
    if (s.top_k > 0 && s.top_k < vocab)
        top_k = radix_select<true>(l, sl, [](int, float) { return 1.f; }, 0.f, (float)s.top_k, sm, cluster);
    Bar top_p = no_bar();
    if (s.top_p < 1.f) {
        // The nucleus is measured within the top-k tokens, against their mass.
        top_p = radix_select(
            l, sl, [&](int i, float v) { return within(top_k, order_key(v), i) ? weight(v) : 0.f; }, s.top_p, 0.f, sm, cluster);
    }
    return id_select(
        l, sl,
        [&](int i, float v) {
            const uint32_t k = order_key(v);
            if (!within(top_k, k, i) || !within(top_p, k, i)) return 0.f;
            const float x = weight(v);
            return x >= min_p ? x : 0.f;
        },
        s.u, 0.f, sm, cluster);
}

// The draw under temperature, top-p and min-p (no top-k), with the top-p bar found in two passes
// over the row instead of five. The max pass has already histogrammed, per first-digit bin, each
// token's weight relative to its bin's top (exp((v - top) / t): no max needed, the bins are keyed
// by logit) as a fixed-point integer (`ihist0`: a float atomicAdd on shared memory is a
// compare-and-swap loop, which the hot bins of a row serialise; an integer add is one atomic), so
// that a bin weighs about exp((top - m) / t) / qscale times its count; those pick the bin where
// the nucleus ends. The second pass takes every token's weight as the draw takes it (`weight`,
// not the guide's fixed point): the row's z, the mass above the bin (all kept: its segments' sums
// go to the draw) and in it, and the bin's tokens as candidates in shared memory. If those masses
// confirm the bin (above < top_p z <= above + in it), the two remaining digits and the draw's
// last segment need only the candidates. The fixed point only guides: where it misleads (weights
// far below a wide bin's top round to 0; a bin's edge within its rounding of the target) the
// masses do not confirm the bin and the passes over the row (general_draw) take the row; where
// the bin's tokens overflow SAMPLE_CANDIDATES, they take it from the second digit. Every branch
// depends on cluster-wide values only, so every CTA takes it.
enum class Nucleus {
    Fallback,  // not drawn: general_draw is to take the row whole
    Found,     // `out` holds the draw, the same on every CTA
    Written,   // the pick is written, and the cluster has met its last barrier
};
// The first digit's histogram and group sums were published with the max pass (its barrier
// is theirs): each slice's groups at its own max's scale, exp((top - m_r) / t), which
// rank_scale (lane r: exp((m_r - m) / t), 0 for an empty slice) brings to the row's.
template <class LT, class W>
__device__ Nucleus nucleus_draw(const LT* __restrict__ l, Slice sl, const RowSampling& s, float m, float inv_t, float qscale,
                                float rank_scale, float min_p, W weight, uint32_t* token, float* prob, Found& out, SampleSmem& sm,
                                cg::cluster_group& cluster) {
    constexpr int shift0 = 32 - SAMPLE_DIGIT0;
    auto q = [&](int, float v) { return weight(v); };
    const Chosen c0 = radix_pick(
        sm, cluster, sm.ihist0, 1 << SAMPLE_DIGIT0, false, guide_bin_scale(m, inv_t, qscale),
        [&](float total) { return s.top_p * total; },
        [&] {
            float g = 0.f;
#pragma unroll
            for (int r = 0; r < SAMPLE_CLUSTER; r++) {
                const float f = __shfl_sync(FULL_MASK, rank_scale, r);
                const float gr = *cluster.map_shared_rank(&sm.group[0][threadIdx.x], r);
                g += gr > 0.f ? f * gr : 0.f;  // an empty slice's scale may be a NaN
            }
            return g;
        });
    const int bin = c0.bin;

    // The second digit's histogram of the bin's tokens fills on the way (its barrier is the
    // pass's), from every token of the bin, candidates or not.
    constexpr int nb1 = 1 << SAMPLE_DIGIT;
    if (threadIdx.x == 0) sm.ncand = 0;
    for (int b = threadIdx.x; b < nb1; b += SAMPLE_THREADS) sm.hist1[b] = 0.f;
    __syncthreads();
    // The pass in id_select's segment order, so that the kept mass above the bin lands in the
    // draw's segments.
    const int seg_len = segment_len<LT>(sl);
    // The bin's keys are [bin_lo, bin_hi]. (A bin < 0 is never placed, below; its pass only
    // keeps the cluster's barriers in step.)
    const uint32_t bin_lo = (uint32_t)bin << shift0, bin_hi = bin_lo | ((1u << shift0) - 1u);
    float z = 0.f, above = 0.f, in_bin = 0.f;
    // A token: its weight into z, and where it lies against the bin; the bin's few tokens take
    // the branch. Keys compared whole (no shift a token), selects rather than branches.
    auto visit = [&](int i, float v, float x) {
        z += x;
        const uint32_t k = order_key(v);
        const bool kept_above = k > bin_hi;
        if (k >= bin_lo && !kept_above) {
            in_bin += x;
            if (x > 0.f) atomicAdd(&sm.hist1[(k >> SAMPLE_DIGIT) & (nb1 - 1)], x);
            const int n = atomicAdd(&sm.ncand, 1);
            if (n < SAMPLE_CANDIDATES) {
                sm.cand_v[n] = v;
                sm.cand_i[n] = i;
            }
        }
        return kept_above ? x : 0.f;
    };
    if (min_p > 0.f) {
        warp_segment_sums(
            l, sl, seg_len,
            [&](int i, float v) {
                const float x = weight(v);
                const float a = visit(i, v, x);
                above += a;
                return x >= min_p ? a : 0.f;
            },
            sm.seg_above);
        above = block_sum(above, sm.scratch);
    } else {
        // Without min-p the segments' sums are the mass above the bin: no third sum a token.
        warp_segment_sums(l, sl, seg_len, [&](int i, float v) { return visit(i, v, weight(v)); }, sm.seg_above);
        __syncthreads();
        above = block_sum(sm.seg_above[threadIdx.x], sm.scratch);
    }
    z = block_sum(z, sm.scratch);
    in_bin = block_sum(in_bin, sm.scratch);
    if (threadIdx.x == 0) {
        sm.pass_z = z;
        sm.pass_above = above;
        sm.pass_bin = in_bin;
        sm.pass_n = sm.ncand;
    }
    auto one = [](int) { return 1.f; };
    radix_publish(sm, sm.hist1, sm.group[1], nb1, one);
    cluster.sync();  // every slice's sums, candidate count and second digit's groups are out
    float total = 0.f, mass_above = 0.f, mass_in = 0.f;
    bool overflow = false;
#pragma unroll
    for (int r = 0; r < SAMPLE_CLUSTER; r++) {
        total += *cluster.map_shared_rank(&sm.pass_z, r);
        mass_above += *cluster.map_shared_rank(&sm.pass_above, r);
        mass_in += *cluster.map_shared_rank(&sm.pass_bin, r);
        overflow |= *cluster.map_shared_rank(&sm.pass_n, r) > SAMPLE_CANDIDATES;
    }
    const float target = s.top_p * total;
    const bool placed = bin >= 0 && mass_above < target && target <= mass_in + mass_above;
    if (!placed) return Nucleus::Fallback;
    const Chosen c1 = radix_pick(sm, cluster, sm.hist1, nb1, false, one, [&](float) { return target - mass_above; },
                                 [&] { return cluster_sum(cluster, &sm.group[1][threadIdx.x]); });
    // The bin holds mass (placed), so c1.bin >= 0 but for a rounding that the passes from the
    // second digit would take from scratch (after a barrier: peers may still read group[1]).
    if (c1.bin < 0) cluster.sync();
    const RadixStart from = c1.bin < 0 ? RadixStart{1, (uint32_t)bin << shift0, ~0u << shift0, mass_above, target}
                                       : RadixStart{2, ((uint32_t)bin << shift0) | ((uint32_t)c1.bin << SAMPLE_DIGIT),
                                                    ~0u << SAMPLE_DIGIT, mass_above + c1.before, target};
    Bar top_p;
    if (!overflow) {
        const int n = sm.ncand;
        top_p = radix_select_from<false, true>(
            l, sl,
            [&](auto f) {
                for (int j = threadIdx.x; j < n; j += SAMPLE_THREADS) f(sm.cand_i[j], sm.cand_v[j]);
            },
            q, from, 0.f, 0.f, sm, cluster);
    } else {
        top_p = radix_select_from<false, false>(l, sl, [&](auto f) { for_slice(l, sl, f); }, q, from, 0.f, 0.f, sm, cluster);
    }
    auto kept = [&](int i, float v) {
        if (!within(top_p, order_key(v), i)) return 0.f;
        const float x = weight(v);
        return x >= min_p ? x : 0.f;
    };
    if (overflow) {
        out = id_select(l, sl, kept, s.u, 0.f, sm, cluster);
        return Nucleus::Found;
    }
    // The candidates the bar keeps join their segments' mass (in no fixed order: the atomics).
    for (int j = threadIdx.x; j < sm.ncand; j += SAMPLE_THREADS) {
        const int i = sm.cand_i[j];
        const float x = kept(i, sm.cand_v[j]);
        if (x > 0.f) atomicAdd(&sm.seg_above[(i - sl.begin) / seg_len], x);
    }
    __syncthreads();
    if (id_draw(l, sl, kept, s.u, sm.seg_above[threadIdx.x], token, prob, sm, cluster)) return Nucleus::Written;
    out = Found{-1, 0.f, 0.f};  // nothing has q > 0 (the bar keeps the max, which weighs 1: never)
    return Nucleus::Found;
}

// The row's first index whose order key is `key` (0x7fffffff where none is), the same on every
// CTA of the cluster: a nucleus row's first pass keeps the max key alone.
template <class LT>
__device__ int first_index_of_key(const LT* __restrict__ l, Slice sl, uint32_t key, SampleSmem& sm, cg::cluster_group& cluster) {
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    int first = 0x7fffffff;
    for_slice(l, sl, [&](int i, float v) {
        if (order_key(v) == key) first = min(first, i);
    });
    first = __reduce_min_sync(FULL_MASK, first);
    __syncthreads();  // a previous reader of warp_id is done
    if (lane == 0) sm.warp_id[w] = first;
    __syncthreads();
    first = __reduce_min_sync(FULL_MASK, lane < SAMPLE_THREADS / WARP ? sm.warp_id[lane] : 0x7fffffff);
    // max_id was last read by the peers right after the max pass's barrier; cluster barriers
    // since then order this write after those reads.
    if (threadIdx.x == 0) sm.max_id = first;
    cluster.sync();  // every slice's first index is out
    return __reduce_min_sync(FULL_MASK, lane < SAMPLE_CLUSTER ? *cluster.map_shared_rank(&sm.max_id, lane) : 0x7fffffff);
}

template <class LT>
__device__ __forceinline__ void sample_row(const SampleParams& p) {
    static_assert((1 << SAMPLE_DIGIT0) % SAMPLE_THREADS == 0 && (1 << SAMPLE_DIGIT) % SAMPLE_THREADS == 0,
                  "every thread owns whole bins");
    static_assert((1 << SAMPLE_DIGIT0) / SAMPLE_THREADS <= WARP && (1 << SAMPLE_DIGIT) / SAMPLE_THREADS <= WARP,
                  "one warp resolves a thread's group of bins");
    static_assert(SAMPLE_THREADS % WARP == 0 && SAMPLE_THREADS / WARP <= WARP && SAMPLE_CLUSTER <= WARP,
                  "one warp combines the warps' and the cluster's maxima");
    __shared__ SampleSmem sm;
    cg::cluster_group cluster = cg::this_cluster();
    const int row = blockIdx.x / SAMPLE_CLUSTER, rank = (int)cluster.block_rank();
    const int vocab = p.vocab;
    const LT* l = static_cast<const LT*>(p.logits) + (size_t)row * vocab;
    const RowSampling s = p.sampling[row];
    if (s.skip) {
        // Uniform over the cluster (one row's knobs): every CTA leaves before any cluster barrier.
        if (rank == 0 && threadIdx.x == 0) {
            p.token[row] = SAMPLE_SKIPPED;
            p.prob[row] = 0.f;
        }
        return;
    }
    // Slices of a multiple of WARP tokens: a warp's 32 consecutive loads stay whole lines.
    const int slice_len = (vocab / SAMPLE_CLUSTER + (vocab % SAMPLE_CLUSTER != 0) + WARP - 1) / WARP * WARP;
    const int begin = min(rank * slice_len, vocab);
    const Slice sl{begin, begin + min(slice_len, vocab - begin)};
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;

    // The max (its key, so that the order is the one every bar uses) and its first index: of
    // the slice, then of the row (exact in any order: ties go to the lower index). An empty
    // slice offers key 0 at no index, below every token.
    uint32_t best = 0;
    int bi = 0x7fffffff;
    auto take_max = [&](int i, uint32_t k) {
        if (k > best || (k == best && i < bi)) {
            best = k;
            bi = i;
        }
    };
    // A top-p row without top-k (nucleus_draw) also histograms its weights in this pass.
    const bool nucleus = s.temperature > 0.f && s.top_p < 1.f && !(s.top_k > 0 && s.top_k < vocab);
    const float inv_t = 1.f / s.temperature, log2e_t = inv_t * 1.44269504f;  // 2^((v - m) log2e / t)
    // nucleus_draw's histogram: weights in [0, 1] as fixed point, scaled so that a slice's sum
    // fits 32 bits (the same scale on every CTA: the cluster adds their bins).
    const float qscale = 4.0e9f / (float)slice_len;
    if (nucleus) {
        for (int b = threadIdx.x; b < (1 << SAMPLE_DIGIT0); b += SAMPLE_THREADS) sm.ihist0[b] = 0u;
        __syncthreads();
        // The fewest instructions a token (this pass reads the row from DRAM, and it was bound by
        // them): the max key alone (its first index is found only where a draw needs it, below),
        // the key and the bin's top straight from v's bits, and 2^x without the range fix-up (a
        // result below 2^-126 flushes to 0, which times qscale rounds to the same 0 anyway).
        constexpr uint32_t low = (1u << (32 - SAMPLE_DIGIT0)) - 1u;  // the bits below the first digit
        for_slice(l, sl, [&](int, float v) {
            const uint32_t bits = __float_as_uint(v);
            const uint32_t neg = (uint32_t)((int32_t)bits >> 31);  // all ones where v < 0
            const uint32_t k = order_key(v);
            best = max(best, k);
            // bin_top(k's bin): the bin's largest v, all of `low` set (v >= 0) or clear (v < 0).
            const float top = __uint_as_float((bits & ~low) | (low & ~neg));
            // NaN: 0. Adding a 0 costs less than the branch around it.
            atomicAdd(&sm.ihist0[k >> (32 - SAMPLE_DIGIT0)], __float2uint_rn(exp2_approx((v - top) * log2e_t) * qscale));
        });
    } else {
        for_slice(l, sl, [&](int i, float v) { take_max(i, order_key(v)); });
    }
    warp_max_key(best, bi);
    if (lane == 0) {
        sm.warp_key[w] = best;
        sm.warp_id[w] = bi;
    }
    __syncthreads();
    best = lane < SAMPLE_THREADS / WARP ? sm.warp_key[lane] : 0u;
    bi = lane < SAMPLE_THREADS / WARP ? sm.warp_id[lane] : 0x7fffffff;
    warp_max_key(best, bi);
    if (threadIdx.x == 0) {
        sm.max_key = best;
        sm.max_id = bi;
    }
    // nucleus_draw's first digit is published with the max, each slice's bins weighed against
    // its own max (the row's is not known yet): one cluster barrier fewer a row. (An empty
    // slice's max is no number; its bins are all empty, which add 0 at any scale.)
    if (nucleus) {
        radix_publish(sm, sm.ihist0, sm.group[0], 1 << SAMPLE_DIGIT0, guide_bin_scale(key_value(best), inv_t, qscale));
    }
    cluster.sync();  // every slice's max is out (and a nucleus row's first digit)
    best = lane < SAMPLE_CLUSTER ? *cluster.map_shared_rank(&sm.max_key, lane) : 0u;
    bi = lane < SAMPLE_CLUSTER ? *cluster.map_shared_rank(&sm.max_id, lane) : 0x7fffffff;
    const uint32_t rank_key = best;  // lane r: slice r's max key
    warp_max_key(best, bi);
    const float m = key_value(best);

    if (!(s.temperature > 0.f)) {
        // Greedy: as row_argmax, the probability at temperature 1.
        float z = 0.f;
        for_slice(l, sl, [&](int, float v) { z += expf(v - m); });
        z = block_sum(z, sm.scratch);
        if (threadIdx.x == 0) sm.part = z;
        cluster.sync();  // every slice's sum is out
        z = cluster_sum(cluster, &sm.part);
        if (rank == 0 && threadIdx.x == 0) {
            p.token[row] = (uint32_t)bi;
            p.prob[row] = 1.f / z;
        }
        cluster.sync();  // no CTA leaves while a peer may still read its shared memory
        return;
    }
    // A token's weight exp((v - m) / t), as 2^x by the one MUFU instruction: within a few parts in
    // 10^6 of the host's f32::exp (the scaled difference's rounding, and ex2.approx's 2 ulp; the
    // draw's tests allow for such), a third of expf's instructions (every pass takes it a token),
    // and the same function in every pass, so that the passes' sums and the draw's walk agree.
    // v = m weighs exactly 1 (2^0), what min-p's cap relies on; a weight below 2^-126 flushes to 0
    // where the host keeps a denormal, which no draw can tell.
    auto weight = [&](float v) { return exp2_approx((v - m) * log2e_t); };
    // The best token weighs exp(0) = 1: a bar above 1 would drop everything.
    const float min_p = fminf(s.min_p, 1.f);
    Found f;
    // Lane r: slice r's first-digit groups to the row's scale (0 for an empty slice, key 0).
    const float rank_scale = lane < SAMPLE_CLUSTER && rank_key != 0u ? expf((key_value(rank_key) - m) * inv_t) : 0.f;
    const Nucleus nd = nucleus && isfinite(m) ? nucleus_draw(l, sl, s, m, inv_t, qscale, rank_scale, min_p, weight, &p.token[row],
                                                             &p.prob[row], f, sm, cluster)
                                              : Nucleus::Fallback;
    if (nd == Nucleus::Written) return;
    if (nd == Nucleus::Fallback) f = general_draw(l, sl, s, vocab, min_p, weight, sm, cluster);
    // No token drawn (no weight above 0): the max's first index, which a nucleus row's first
    // pass did not keep. f is the cluster's, so every CTA takes this branch or none does.
    if (f.id < 0 && nucleus) bi = first_index_of_key(l, sl, best, sm, cluster);
    if (rank == 0 && threadIdx.x == 0) {
        p.token[row] = f.id >= 0 ? (uint32_t)f.id : (uint32_t)bi;
        p.prob[row] = f.id >= 0 ? f.q / f.total : 1.f;
    }
    cluster.sync();  // no CTA leaves while a peer may still read its shared memory
}

// The two instantiations: the rows as f32 (the host's logits, tests) or as bf16 (a sampled step's
// lm_head: CudaOptions::sample_bf16).
extern "C" __global__ void __cluster_dims__(SAMPLE_CLUSTER, 1, 1) __launch_bounds__(SAMPLE_THREADS, SAMPLE_CTAS)
    sample_rows(const SampleParams p) {
    sample_row<float>(p);
}
extern "C" __global__ void __cluster_dims__(SAMPLE_CLUSTER, 1, 1) __launch_bounds__(SAMPLE_THREADS, SAMPLE_CTAS)
    sample_rows_bf16(const SampleParams p) {
    sample_row<bf16>(p);
}
