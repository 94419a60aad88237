// The QKV projection with qk_norm_rope_store's work in its epilogue (sm_90a; params.h,
// QkvRopeParams): each unit's f32 sums (128 rows by two heads of 128) get the per-head QK RMSNorm,
// the partial neox RoPE and their stores (Q to q_out, K and V into the step's pages) in
// registers, so the QKV rows are never written or read back, and the rope kernel's launch and
// memory round trip are gone. CPU twin: the QKV projection then backend::cpu's
// qk_norm_rope_store (rms_norm_row, rope_row), as rope.cu's kernels.
#include "common.cuh"
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#include "gemm_tiles.cuh"

// The works: unit i (row tile i % row_tiles of column tile i / row_tiles, all of k) below `full`;
// past it, the units from `full` on split `split` ways over k, a unit's splits consecutive.
struct QkvWork {
    int row_tiles, full, split, ktiles, count;
    __device__ __forceinline__ DenseWork at(int i) const {
        int u = i, kt0 = 0, kt1 = ktiles;
        if (i >= full) {
            const int s = (i - full) % split;
            u = full + (i - full) / split;
            kt0 = ktiles * s / split;
            kt1 = ktiles * (s + 1) / split;
        }
        return DenseWork{(u % row_tiles) * DENSE_WS_ROWS, (u / row_tiles) * DENSE_WS_COLS, kt0, kt1};
    }
};

// A split unit's sums: this split's written to p.partials, and, where it is the unit's last to
// arrive, every split's added in split order (so the sum does not depend on which came last) into
// lo and hi. Returns whether this warpgroup has the unit's whole sums (then it runs the epilogue).
__device__ __forceinline__ bool gather_splits(const QkvRopeParams& p, int tail_unit, int s, int g, float (&lo)[64], float (&hi)[64]) {
    __shared__ int last[DENSE_WS_WGS];
    const int t = threadIdx.x % MOE_WG_THREADS;
    auto part = [&](int split) {
        return reinterpret_cast<float4*>(p.partials + ((size_t)(tail_unit * p.split + split) * DENSE_WS_WGS + g) * QKV_ROPE_PARTIAL_FLOATS);
    };
    // Thread t's sums as 32 float4s, the v-th at [v][t]: a warp's stores are 512 contiguous bytes.
    float4* mine = part(s);
#pragma unroll
    for (int v = 0; v < 16; v++) {
        __stcg(mine + v * MOE_WG_THREADS + t, make_float4(lo[4 * v], lo[4 * v + 1], lo[4 * v + 2], lo[4 * v + 3]));
        __stcg(mine + (16 + v) * MOE_WG_THREADS + t, make_float4(hi[4 * v], hi[4 * v + 1], hi[4 * v + 2], hi[4 * v + 3]));
    }
    // The threadFenceReduction pattern: every thread's stores are visible before the count says so.
    __threadfence();
    asm volatile("bar.sync %0, %1;\n" ::"r"(1 + g), "r"(MOE_WG_THREADS) : "memory");
    int* arrived = p.arrivals + tail_unit * DENSE_WS_WGS + g;
    if (t == 0) last[g] = atomicAdd(arrived, 1) == p.split - 1;
    asm volatile("bar.sync %0, %1;\n" ::"r"(1 + g), "r"(MOE_WG_THREADS) : "memory");
    if (!last[g]) return false;
    __threadfence();
    if (t == 0) *arrived = 0;  // for the next launch: every split of this unit has counted
#pragma unroll
    for (int j = 0; j < 64; j++) lo[j] = hi[j] = 0.f;
    for (int split = 0; split < p.split; split++) {
        const float4* src = part(split);
#pragma unroll
        for (int v = 0; v < 16; v++) {
            const float4 a = __ldcg(src + v * MOE_WG_THREADS + t), b = __ldcg(src + (16 + v) * MOE_WG_THREADS + t);
            lo[4 * v] += a.x, lo[4 * v + 1] += a.y, lo[4 * v + 2] += a.z, lo[4 * v + 3] += a.w;
            hi[4 * v] += b.x, hi[4 * v + 1] += b.y, hi[4 * v + 2] += b.z, hi[4 * v + 3] += b.w;
        }
    }
    return true;
}

// A unit's epilogue. Thread (warpgroup g, warp wp, lane) holds rows 64g + 16wp + lane / 4 (+ 8:
// `half`) of the unit, and of each of its two heads (lo, hi) the columns 8j + 2q + e (q = lane % 4,
// j < 16, e < 2) as d[4j + 2 half + e]. JP = rot / 16: a rotated column 8j + 2q + e (j < JP) pairs
// with the column 8 JP further, which the same thread holds (j + JP).
template <int JP>
struct QkvRopeEpilogue {
    const QkvRopeParams& p;
    size_t kv_at[2];     // each row's K row of KV head 0 in the pool (its V row: ps x nkv x d further)
    float2 cs[2][JP][2];  // each row's (cos, sin) of its rotated pairs 8j + 2q + e

    // The rows' pool rows and angles, asked for before the unit's k-steps. Every position is in
    // the angle table (the host checks), so there is no f64 fallback here: rope.cu's, inlined for
    // each of a thread's angles, made this kernel's code 105 KB (49 KB without).
    __device__ __forceinline__ void prepare(const DenseWork& w, int, int g) {
        const RopeParams& r = p.rope;
        const KvLayout kl(r.kv, r.nkv, QKV_ROPE_HEAD_DIM);
        const float2* angles = reinterpret_cast<const float2*>(r.cos_sin);
        const int q = threadIdx.x % 4, half_rot = 8 * JP;
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int row = dense_ws_row(w, g, half);
            const bool ok = row < r.tokens;
            const int pos = ok ? r.tok_pos[row] : 0;
            const int page = ok ? r.kv.page_table[r.kv.tok_pt[row] + kl.page(pos)] : 0;
            kv_at[half] = kl.row(page, kl.slot(pos), 0, 0, QKV_ROPE_HEAD_DIM);
#pragma unroll
            for (int j = 0; j < JP; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) cs[half][j][e] = angles[(size_t)pos * half_rot + 8 * j + 2 * q + e];
        }
    }

    // Head `head`'s row of one row (`half`): V stored as is; Q and K normed, rotated and stored.
    // `head` is the same over the warpgroup, so the quad's shuffles have every lane.
    __device__ __forceinline__ void head_row(const float (&d)[64], int half, int head, int row) {
        const RopeParams& r = p.rope;
        constexpr int D = QKV_ROPE_HEAD_DIM;
        const int q = threadIdx.x % 4;
        const bool ok = row < r.tokens;
        // The row goes out as bf16x2 pairs through the quad's 16-byte stores (store_quad_row: as
        // 4-byte pairs, a consumer's 64 stores a unit filled the LSU's queue, session 61's source
        // view: the epilogue's most sampled stall); only rows of the step (`ok`) are stored.
        uint32_t v[16];
        if (head >= r.nh + r.nkv) {
            bf16* dst = r.kv.pool + kv_at[half] + (size_t)r.kv.page_size * r.nkv * D + (size_t)(head - r.nh - r.nkv) * D;
#pragma unroll
            for (int j = 0; j < 16; j++) v[j] = bf16x2_bits(d[4 * j + 2 * half], d[4 * j + 2 * half + 1]);
            store_quad_row(dst, 0, D, v, ok);
            return;
        }
        const bool is_q = head < r.nh;
        float ss = 0.f;
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) ss += d[4 * j + 2 * half + e] * d[4 * j + 2 * half + e];
        ss += __shfl_xor_sync(0xffffffffu, ss, 1);
        ss += __shfl_xor_sync(0xffffffffu, ss, 2);
        const float inv = rsqrtf(ss / D + r.eps);
        const float* nw = is_q ? r.q_norm : r.k_norm;
        float o[16][2];
#pragma unroll
        for (int j = 0; j < 16; j++) {
            const float2 wv = *reinterpret_cast<const float2*>(nw + 8 * j + 2 * q);
            o[j][0] = d[4 * j + 2 * half] * inv * wv.x;
            o[j][1] = d[4 * j + 2 * half + 1] * inv * wv.y;
        }
#pragma unroll
        for (int j = 0; j < JP; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float a = o[j][e], b = o[j + JP][e], c = cs[half][j][e].x, s = cs[half][j][e].y;
                o[j][e] = a * c - b * s;
                o[j + JP][e] = b * c + a * s;
            }
        bf16* dst = is_q ? r.q_out + ((size_t)row * r.nh + head) * D : r.kv.pool + kv_at[half] + (size_t)(head - r.nh) * D;
#pragma unroll
        for (int j = 0; j < 16; j++) v[j] = bf16x2_bits(o[j][0], o[j][1]);
        store_quad_row(dst, 0, D, v, ok);
    }

    __device__ __forceinline__ void finish(const DenseWork& w, int i, int g, float (&lo)[64], float (&hi)[64]) {
        const int full = p.units - p.tail;
        if (i >= full && !gather_splits(p, (i - full) / p.split, (i - full) % p.split, g, lo, hi)) return;
        const int head = w.n0 / QKV_ROPE_HEAD_DIM, heads = p.rope.nh + 2 * p.rope.nkv;
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int row = dense_ws_row(w, g, half);
            head_row(lo, half, head, row);
            if (head + 1 < heads) head_row(hi, half, head + 1, row);
        }
    }
};

template <int JP>
__device__ __forceinline__ void qkv_rope_tiles(const QkvRopeParams& p) {
    // The attention after it may start its CTAs (launched as a programmatic dependent, as after
    // qk_norm_rope_store): they read only the step's layout before their pdl_wait.
    pdl_release();
    const int row_tiles = (p.rope.tokens + DENSE_WS_ROWS - 1) / DENSE_WS_ROWS, full = p.units - p.tail;
    const QkvWork work{row_tiles, full, p.split, (p.k + GEMM_BK - 1) / GEMM_BK, full + p.tail * p.split};
    QkvRopeEpilogue<JP> epi{p};
    // The walked x copies: this kernel's producers bound how fast its stages fill (gemm_tiles.cuh).
    // A programmatic dependent of the input norm (qkv_rope.rs): its first weights are asked for
    // while the norm runs.
    dense_ws_tiles<QkvWork, QkvRopeEpilogue<JP>, QKV_ROPE_PRODUCER_REGS, QKV_ROPE_CONSUMER_REGS, true, true>(p.x, p.rope.tokens, p.k, p.w_map, work, epi);
}
#endif

// rot 64 (mini's and flash's head dim 128 at partial_rotary_factor 0.5) and 128 (all of it).
extern "C" __global__ void __launch_bounds__(DENSE_WS_THREADS, 1) qkv_rope_store_r64(const QkvRopeParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    qkv_rope_tiles<4>(p);
#else
    __trap();  // the host launches it only where wgmma is
#endif
}
extern "C" __global__ void __launch_bounds__(DENSE_WS_THREADS, 1) qkv_rope_store_r128(const QkvRopeParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    qkv_rope_tiles<8>(p);
#else
    __trap();
#endif
}
