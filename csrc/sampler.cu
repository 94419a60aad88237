// The sampled pick: decode::sample::sample_row_u on the device (its CPU twin), so that sampled
// decoding never copies logits rows to the host. One CTA per row.
//
// The kept set is a prefix of the row in logit order (larger first, ties: lower id first), so
// each filter is a bar in that order: a logit (as its 32-bit order key) and, among the tokens of
// exactly that logit, the highest id kept. The passes over the row:
//   1      max and argmax (a greedy row then sums exp(l - max), as row_argmax, and is done);
//   3      the top-k bar: radix select of the k-th token by counts (when 0 < top_k < vocab);
//   3      the top-p bar: radix select by mass among the top-k tokens; the first pass's total is
//          their mass z and the target top_p * z (when top_p < 1);
//   (+1)   rarely, a bar that falls among tied logits cuts them in id order;
//   1      the draw: each segment's mass of kept tokens, a block scan, and one warp walking the
//          segment where u times the kept mass falls (the inverse CDF in token-id order).
// min-p needs no pass: its bar is a weight, tested wherever a weight is computed.
#include "common.cuh"

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float key_value(uint32_t k) { return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }

// The tokens of key > key, and those of key == key with id <= id_cut.
struct Bar {
    uint32_t key;
    int id_cut;
};
__device__ __forceinline__ bool within(const Bar& b, uint32_t key, int i) { return key > b.key || (key == b.key && i <= b.id_cut); }
// Every token (every key is >= 0).
__device__ __forceinline__ Bar no_bar() { return Bar{0u, 0x7fffffff}; }

struct SampleSmem {
    float hist[1 << SAMPLE_DIGIT0];   // one radix pass's quantity per bin
    unsigned ties[1 << SAMPLE_DIGIT];  // the last pass's token count per bin (a bar among ties)
    float seg[SAMPLE_THREADS];         // the draw: each segment's quantity
    float scratch[WARP];
    int bin, low;                      // radix: the bin the target falls in; the lowest non-empty
    int claim, last;                   // id select: the segment the target falls in; the last non-empty
    float before;                      // the quantity ahead of the chosen bin or segment
    int found;
    float found_q;
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
    float x = v;
#pragma unroll
    for (int o = 1; o < WARP; o <<= 1) {
        const float y = __shfl_up_sync(FULL_MASK, x, o);
        if (lane >= o) x += y;
    }
    float prev = __shfl_up_sync(FULL_MASK, x, 1);
    if (lane == 0) prev = 0.f;
    __syncthreads();  // a previous scan may still read scratch
    if (lane == WARP - 1) scratch[w] = x;
    __syncthreads();
    float t = lane < nw ? scratch[lane] : 0.f;
#pragma unroll
    for (int o = 1; o < WARP; o <<= 1) {
        const float y = __shfl_up_sync(FULL_MASK, t, o);
        if (lane >= o) t += y;
    }
    float off = __shfl_sync(FULL_MASK, t, w > 0 ? w - 1 : 0);
    if (w == 0) off = 0.f;
    total = __shfl_sync(FULL_MASK, t, nw - 1);
    // Consecutive threads of a warp share their boundary value exactly, so a target falls in
    // one thread's [excl, incl) there; across warps a rounding gap is left to the callers.
    excl = off + prev;
    incl = off + x;
}

// f(i, l[i]) over the row, SAMPLE_UNROLL loads in flight a thread (as row_argmax).
template <class F>
__device__ __forceinline__ void for_row(const float* __restrict__ l, int vocab, F f) {
    constexpr int U = SAMPLE_UNROLL, B = SAMPLE_THREADS;
    int i0 = threadIdx.x;
    for (; i0 + (U - 1) * B < vocab; i0 += U * B) {
        float v[U];
#pragma unroll
        for (int u = 0; u < U; u++) v[u] = l[i0 + u * B];
#pragma unroll
        for (int u = 0; u < U; u++) f(i0 + u * B, v[u]);
    }
    for (int i = i0; i < vocab; i += B) f(i, l[i]);
}

// The first token in id order at which the running sum of q (>= 0) exceeds
// target = frac * (total of q) + add, its q, and the total. A target at or past the total
// (rounding) takes the last token with q > 0. The row is cut into SAMPLE_THREADS segments of
// seg_len (a multiple of WARP) tokens, warp w owning segments 32w .. 32w+31: its loads are
// 32 consecutive tokens, and each segment's sum is a warp sum.
struct Found {
    int id;
    float q, total;
};
template <class Q>
__device__ Found id_select(const float* __restrict__ l, int vocab, Q q, float frac, float add, SampleSmem& sm) {
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    const int tiles = (vocab + SAMPLE_THREADS * WARP - 1) / (SAMPLE_THREADS * WARP);  // a segment's
    const int seg_len = tiles * WARP;
    {
        // All 32 segments of the warp at once: 32 loads in flight a lane.
        float acc[WARP];
#pragma unroll
        for (int s = 0; s < WARP; s++) acc[s] = 0.f;
        for (int t = 0; t < tiles; t++) {
#pragma unroll
            for (int s = 0; s < WARP; s++) {
                const int i = (w * WARP + s) * seg_len + t * WARP + lane;
                if (i < vocab) acc[s] += q(i, l[i]);
            }
        }
#pragma unroll
        for (int s = 0; s < WARP; s++) {
            const float tot = warp_sum(acc[s]);
            if (lane == 0) sm.seg[w * WARP + s] = tot;
        }
    }
    if (threadIdx.x == 0) {
        sm.claim = SAMPLE_THREADS;
        sm.last = -1;
    }
    __syncthreads();
    const float mine = sm.seg[threadIdx.x];
    float excl, incl, total;
    block_scan(mine, sm.scratch, excl, incl, total);
    const float target = frac * total + add;
    if (mine > 0.f) {
        if (excl <= target && target < incl) atomicMin(&sm.claim, (int)threadIdx.x);
        atomicMax(&sm.last, (int)threadIdx.x);
    }
    __syncthreads();
    const int seg = sm.claim < SAMPLE_THREADS ? sm.claim : sm.last;
    if (seg < 0) return Found{-1, 0.f, total};  // nothing has q > 0 (the callers never ask so)
    if ((int)threadIdx.x == seg) sm.before = sm.claim < SAMPLE_THREADS ? target - excl : INFINITY;
    __syncthreads();
    if (w == 0) {
        // Walk the segment 32 tokens at a time; a rounding miss falls back on its last q > 0.
        const float r = sm.before;
        const int start = seg * seg_len, end = min(start + seg_len, vocab);
        float run = 0.f, last_q = 0.f;
        int found = -1, last_id = -1;
        for (int base = start; base < end && found < 0; base += WARP) {
            const int i = base + lane;
            const float x = i < end ? q(i, l[i]) : 0.f;
            float c = x;
#pragma unroll
            for (int o = 1; o < WARP; o <<= 1) {
                const float y = __shfl_up_sync(FULL_MASK, c, o);
                if (lane >= o) c += y;
            }
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
    __syncthreads();
    return Found{sm.found, sm.found_q, total};
}

// The bar of the first token in logit order at which the running sum of q (>= 0; q = 1 counts
// tokens, q = weight sums mass) reaches target = frac * (total of q) + add, the total known
// after the first pass. Radix select over the keys, most significant digit first: each pass
// histograms q over the next digit among the tokens that match the digits chosen so far, and
// takes the bin the target falls in. Ties at the final key are cut in id order by id_select.
template <class Q>
__device__ Bar radix_select(const float* __restrict__ l, int vocab, Q q, float frac, float add, SampleSmem& sm) {
    uint32_t prefix = 0, mask = 0;
    float above = 0.f, target = 0.f, tie_q = 0.f;
    unsigned tie_n = 0;
#pragma unroll 1
    for (int d = 0; d < 3; d++) {
        const int bits = d == 0 ? SAMPLE_DIGIT0 : SAMPLE_DIGIT;
        const int shift = d == 0 ? 32 - SAMPLE_DIGIT0 : d == 1 ? SAMPLE_DIGIT : 0;
        const int nb = 1 << bits;
        const bool last = d == 2;
        for (int b = threadIdx.x; b < nb; b += SAMPLE_THREADS) {
            sm.hist[b] = 0.f;
            if (last) sm.ties[b] = 0u;
        }
        if (threadIdx.x == 0) {
            sm.bin = -1;
            sm.low = nb;
        }
        __syncthreads();
        for_row(l, vocab, [&](int i, float v) {
            const uint32_t k = order_key(v);
            if ((k & mask) != prefix) return;
            const float x = q(i, v);
            if (x > 0.f) {
                const int b = (k >> shift) & (nb - 1);
                atomicAdd(&sm.hist[b], x);
                if (last) atomicAdd(&sm.ties[b], 1u);
            }
        });
        __syncthreads();
        // Thread t owns c bins from the top down, so thread order is logit order.
        const int c = nb / SAMPLE_THREADS, hi = nb - 1 - threadIdx.x * c;
        float own = 0.f;
        for (int j = 0; j < c; j++) own += sm.hist[hi - j];
        float excl, incl, total;
        block_scan(own, sm.scratch, excl, incl, total);
        if (d == 0) target = frac * total + add;
        const float need = target - above;
        float cum = excl;
        int claim = -1, low = nb;
        for (int j = 0; j < c; j++) {
            const float h = sm.hist[hi - j];
            if (h > 0.f) {
                if (claim < 0 && cum + h >= need) claim = hi - j;
                low = hi - j;
            }
            cum += h;
        }
        if (claim >= 0) atomicMax(&sm.bin, claim);
        if (low < nb) atomicMin(&sm.low, low);
        __syncthreads();
        // A target past the total (rounding) keeps everything: the lowest non-empty bin.
        const int chosen = sm.bin >= 0 ? sm.bin : sm.low;
        if (chosen >= nb) return no_bar();  // q is 0 everywhere (the callers never ask so)
        if ((int)threadIdx.x == (nb - 1 - chosen) / c) {
            float b4 = excl;
            for (int b = hi; b > chosen; b--) b4 += sm.hist[b];
            sm.before = b4;
        }
        __syncthreads();
        above += sm.before;
        prefix |= (uint32_t)chosen << shift;
        mask |= (uint32_t)(nb - 1) << shift;
        if (last) {
            tie_q = sm.hist[chosen];
            tie_n = sm.ties[chosen];
        }
        __syncthreads();  // hist is cleared by the next pass
    }
    // The ties at the key all weigh the same: keep as many as the target still needs.
    const float unit = tie_q / (float)tie_n;
    int keep = (int)ceilf((target - above) / unit);
    keep = max(1, min(keep, (int)tie_n));
    if (keep == (int)tie_n) return Bar{prefix, 0x7fffffff};
    const uint32_t key = prefix;
    const Found f = id_select(
        l, vocab, [&](int i, float v) { return order_key(v) == key && q(i, v) > 0.f ? 1.f : 0.f; }, 0.f, keep - 0.5f, sm);
    return Bar{key, f.id};
}

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sample_rows(const SampleParams p) {
    static_assert((1 << SAMPLE_DIGIT0) % SAMPLE_THREADS == 0 && (1 << SAMPLE_DIGIT) % SAMPLE_THREADS == 0,
                  "every thread owns whole bins");
    __shared__ SampleSmem sm;
    __shared__ uint32_t wk[SAMPLE_THREADS / WARP];
    __shared__ int wi[SAMPLE_THREADS / WARP];
    const int vocab = p.vocab;
    const float* l = p.logits + (size_t)blockIdx.x * vocab;
    const RowSampling s = p.sampling[blockIdx.x];

    // The max (its key, so that the order is the one every bar uses) and its first index.
    uint32_t best = 0;
    int bi = 0x7fffffff;
    for_row(l, vocab, [&](int i, float v) {
        const uint32_t k = order_key(v);
        if (k > best || (k == best && i < bi)) {
            best = k;
            bi = i;
        }
    });
    warp_max_key(best, bi);
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    if (lane == 0) {
        wk[w] = best;
        wi[w] = bi;
    }
    __syncthreads();
    best = lane < SAMPLE_THREADS / WARP ? wk[lane] : 0u;
    bi = lane < SAMPLE_THREADS / WARP ? wi[lane] : 0x7fffffff;
    warp_max_key(best, bi);
    const float m = key_value(best);

    if (!(s.temperature > 0.f)) {
        // Greedy: as row_argmax, the probability at temperature 1.
        float z = 0.f;
        for_row(l, vocab, [&](int, float v) { z += expf(v - m); });
        z = block_sum(z, sm.scratch);
        if (threadIdx.x == 0) {
            p.token[blockIdx.x] = (uint32_t)bi;
            p.prob[blockIdx.x] = 1.f / z;
        }
        return;
    }
    const float inv_t = 1.f / s.temperature;
    // The host's weight, bit for bit where expf agrees with Rust's f32::exp.
    auto weight = [&](float v) { return expf((v - m) * inv_t); };

    Bar top_k = no_bar();
    if (s.top_k > 0 && s.top_k < vocab)
        top_k = radix_select(l, vocab, [](int, float) { return 1.f; }, 0.f, (float)s.top_k, sm);
    Bar top_p = no_bar();
    if (s.top_p < 1.f) {
        // The nucleus is measured within the top-k tokens, against their mass.
        top_p = radix_select(
            l, vocab, [&](int i, float v) { return within(top_k, order_key(v), i) ? weight(v) : 0.f; }, s.top_p, 0.f, sm);
    }
    // The best token weighs exp(0) = 1: a bar above 1 would drop everything.
    const float min_p = fminf(s.min_p, 1.f);
    const Found f = id_select(
        l, vocab,
        [&](int i, float v) {
            const uint32_t k = order_key(v);
            if (!within(top_k, k, i) || !within(top_p, k, i)) return 0.f;
            const float x = weight(v);
            return x >= min_p ? x : 0.f;
        },
        s.u, 0.f, sm);
    if (threadIdx.x == 0) {
        p.token[blockIdx.x] = f.id >= 0 ? (uint32_t)f.id : (uint32_t)bi;
        p.prob[blockIdx.x] = f.id >= 0 ? f.q / f.total : 1.f;
    }
}
