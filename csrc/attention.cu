// block_attention + attention_combine: bidirectional block attention as flash-decoding over
// the paged KV cache (GQA, online softmax, fp32 accumulate, bf16 tensor cores). Query token t
// sees keys [0, tok_limit[t]) of its sequence (block-causal: its own block and everything
// before it).
//
// Grid (tile, kv head, split). A tile is up to ATT_ROWS = 128 query rows: up to 128/group tokens
// of one run x the `group` query heads of KV head `kh` (row r = token r / group, head
// r % group), so every K/V row staged in shared memory serves 128 query rows. The CTA walks
// keys [split * split_keys, min(that + split_keys, tile's largest limit)) in chunks of KC = 64
// keys (32 at head dim 256: params.h att_kc) through ATT_STAGES cp.async stages (K and V rows
// of a chunk, 16 bytes a copy, zero-filled past the end), so the copies of the next chunks are
// in flight while one is computed. Each row is masked by its own limit (prefill tiles span
// blocks, so rows of one tile differ).
//
// The FlashAttention-2 structure, one pass over the keys: 8 warps, warp w owns query rows
// 16w..16w+15 (one m16 row tile) throughout. Per chunk a warp computes its 16 x KC scores
// S = Q K^T with mma.sync m16n8k16 (Q from registers, K by ldmatrix), keeps S in the
// accumulator registers, updates each row's running max and sum (a row lives in the 4 lanes of
// a quad: two shuffles), rescales O, turns S into P = exp(S - max) in place, re-packs P's
// accumulators as the A operand of O += P V (the C layout of two n8 tiles is the A layout of
// one k16 step: no shared memory) and reads V by ldmatrix.trans. O stays in registers; the one
// barrier per chunk is the one that hands a stage over. What this replaced (WMMA 16x16x16, S
// and P through shared memory, two passes over the keys): docs/PERF.md.
//
// Head dims: the kernel is compiled for D = 64, 128 and 256 (block_attention_d64,
// block_attention, block_attention_d256); a smaller d runs on the next D up with the columns
// d..D of Q, K and V zero-filled in shared memory (they add 0 to S; O's are never written).
// On sm_90a head dim 128 (mini, flash) runs the same tiles and softmax with the products on
// wgmma instead (block_attention_wgmma below); the mma.sync body serves the rest. Where every CTA
// of a launch has an SM to itself, the host takes block_attention_deep: the same arithmetic,
// warp-specialized at one CTA an SM (block_attention_wgmma_ws).
//
// Output: with one split the CTA normalises and writes `out`; otherwise it writes the
// unnormalised O and (m, l) per row to part_acc / part_ml, m in log2 units (rows with no key in
// the split are skipped: attention_combine reads split s of token t only when
// s * split_keys < limit(t), and then the row has at least that key).
#include "common.cuh"
#include "cp_async.cuh"
#include "mbarrier.cuh"
#include "stream.cuh"
#include "tma.cuh"
#include "wgmma.cuh"

// ---- mma.sync m16n8k16 (bf16 in, fp32 accumulate) and ldmatrix -----------------------------
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"), g = lane / 4, t = lane % 4;
// a .b32 register holds two bf16, the lower row/column index in the low half:
//   A (16 x 16, row-major, 4 regs): a0 = A[g][2t, 2t+1]   a1 = A[g+8][2t, 2t+1]
//                                   a2 = A[g][2t+8, 2t+9] a3 = A[g+8][2t+8, 2t+9]
//   B (16 x 8, k x n, 2 regs):      b0 = B[2t, 2t+1][g]   b1 = B[2t+8, 2t+9][g]
//   C (16 x 8, fp32, 4 regs):       c0, c1 = C[g][2t, 2t+1]   c2, c3 = C[g+8][2t, 2t+1]
// ldmatrix .x4 loads four 8 x 8 b16 matrices: lanes 8i..8i+7 give the addresses of matrix i's
// rows 0..7, and register i of lane l gets matrix i's row l/4, columns 2(l%4), 2(l%4)+1; with
// .trans it gets column l/4, rows 2(l%4), 2(l%4)+1 (the same fragment of the transpose).
// So, for a row-major 16 x 16 block M at (r0, c0) in shared memory:
//   - as A: lane l points at M[r0 + l%16][c0 + 8(l/16)]; registers 0..3 are a0..a3 (matrix i
//     is rows +8(i%2), columns +8(i/2), which is the order a0..a3 above).
//   - K (keys x dims) as B of Q K^T (B[k][n] = K[n][k], so b0 of key tile n is rows n..n+7,
//     dims 2t.. of K: plain ldmatrix): lane l points at K[n0 + l%8 + 8(l/16)][k0 + 8((l/8)%2)];
//     registers 0, 1 are b0, b1 of keys n0..n0+7 and 2, 3 those of keys n0+8..n0+15.
//   - V (keys x dims) as B of P V (B[k][n] = V[k][n]: b0 = V[2t, 2t+1][g] is a column pair, so
//     .trans): lane l points at V[k0 + l%16][n0 + 8(l/16)]; registers 0, 1 are b0, b1 of dims
//     n0..n0+7 and 2, 3 those of dims n0+8..n0+15.
// c += a b (one m16n8k16 tile).
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// bf16x2 of (lo, hi), lo in the low half; `sum` gets the rounded values (the P that P.V uses).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi, float& sum) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    sum += __low2float(h) + __high2float(h);
    uint32_t u;
    memcpy(&u, &h, 4);
    return u;
}

// The K/V copies of a chunk by THREADS threads: copier i copies column (i % PER_ROW) * 8 (16
// bytes) of rows i / PER_ROW + PASS * j, j < ROWS, of K and of V.
template <int D, int THREADS = ATT_THREADS>
struct AttCopy {
    static constexpr int KC = att_kc(D), PER_ROW = D / 8, PASS = THREADS / PER_ROW, ROWS = KC / PASS;
    static_assert(THREADS % PER_ROW == 0 && KC % PASS == 0, "a thread copies one column of some rows");
};

// A thread's K/V addressing, worked out once a CTA: the pool's layout (KvLayout, common.cuh) and
// the part of a copy's offset that no page changes (its column: the same for any copier count,
// a multiple of PER_ROW threads). (Working out each copy's offset, two integer
// divisions a copy, left the kernel's issue slots half busy with the integer pipe the busiest:
// ncu, docs/PERF.md.)
template <int D>
struct AttKvAddr {
    KvLayout kv;
    size_t base;  // this layer's K, head kh, this thread's column
    __device__ __forceinline__ AttKvAddr(const AttnParams& p, int kh) : kv(p.kv, p.nkv, p.d) {
        base = kv.layer_base + (size_t)kh * p.d + (threadIdx.x % AttCopy<D>::PER_ROW) * 8;
    }
};

// The pages of this thread's rows of the chunk at kbase (0 past kend: never read). Loaded one
// chunk ahead of its copies, so the page-table reads are in flight while a chunk is computed
// instead of stalling the copy issue.
// `tid`: this thread's index among the THREADS copiers.
template <int D, int THREADS = ATT_THREADS>
__device__ __forceinline__ void att_pages(const AttKvAddr<D>& a, const int32_t* pt, int kbase, int kend, int (&pg)[AttCopy<D, THREADS>::ROWS],
                                          int tid = threadIdx.x) {
    using C = AttCopy<D, THREADS>;
#pragma unroll
    for (int i = 0; i < C::ROWS; i++) {
        const int pos = kbase + tid / C::PER_ROW + i * C::PASS;
        pg[i] = pos < kend ? pt[a.kv.page(pos)] : 0;
    }
}

// Issue the cp.async copies of keys [kbase, kbase + KC) of KV head kh (in `a`) into a stage's K
// and V tiles, row j's 16-byte chunk c8 (columns 8 c8..) at byte offset at(j, c8) of each, their
// pages in `pg`. Keys at or past kend, and columns at or past d, are zero-filled: 0 * V must
// stay 0 in P.V, and a zero column adds nothing to Q K^T.
template <int D, int THREADS = ATT_THREADS, class At>
__device__ __forceinline__ void att_load_chunk(const AttnParams& p, const AttKvAddr<D>& a, const int (&pg)[AttCopy<D, THREADS>::ROWS], int kbase,
                                               int kend, unsigned char* ks, unsigned char* vs, At at, int tid = threadIdx.x) {
    using C = AttCopy<D, THREADS>;
    const int c = (tid % C::PER_ROW) * 8;
#pragma unroll
    for (int i = 0; i < C::ROWS; i++) {
        const int j = tid / C::PER_ROW + i * C::PASS, pos = kbase + j;
        const bool valid = pos < kend && c < p.d;
        // KvLayout::row with the page looked up ahead and the head's column hoisted.
        const size_t k_off = (size_t)pg[i] * a.kv.page_stride + a.base + (size_t)a.kv.slot(pos) * a.kv.row_elems;
        const bf16* src = valid ? p.kv.pool + k_off : p.kv.pool;
        cp_async16(ks + at(j, c / 8), src, valid);
        cp_async16(vs + at(j, c / 8), valid ? src + a.kv.ps * a.kv.row_elems : src, valid);  // V: page_size positions on
    }
}
// The mma.sync path's layout: rows of D + ATT_PAD bf16.
template <int D>
__device__ __forceinline__ int att_padded_at(int j, int c8) { return (j * (D + ATT_PAD) + c8 * 8) * 2; }

// What both bodies (mma.sync, wgmma) work out before their loops and write after them.

// The CTA's tile (blockIdx.x), its rows and page table, and the keys of its split (blockIdx.z).
struct AttTile {
    int t0, nt, rows, group;  // first token, tokens, query rows (tokens x group)
    const int32_t* pt;        // one run per tile: one page table
    int k0, k1, nchunks;      // the split's keys [k0, k1) in chunks of KC
};
// False when the split holds no key of the tile (uniform over the CTA: it returns at once).
template <int KC>
__device__ __forceinline__ bool att_tile(const AttnParams& p, AttTile& t) {
    const int tile = blockIdx.x, split = blockIdx.z, lane = threadIdx.x % WARP;
    t.group = p.nh / p.nkv;
    t.t0 = p.tiles[2 * tile];
    t.nt = p.tiles[2 * tile + 1];
    t.rows = t.nt * t.group;
    t.pt = p.kv.page_table + p.kv.tok_pt[t.t0];
    // The tile's largest key limit bounds the keys any row needs (limits are >= 1). Each warp
    // reads the (at most 64) limits a lane each: one round trip, not a serial chain of loads.
    int kmax = 0;
    for (int i = lane; i < t.nt; i += WARP) kmax = max(kmax, p.tok_limit[t.t0 + i]);
    kmax = __reduce_max_sync(0xffffffffu, kmax);
    const int split_keys = *p.split_keys;
    t.k0 = split * split_keys;
    t.k1 = min(kmax, t.k0 + split_keys);
    t.nchunks = (t.k1 - t.k0 + KC - 1) / KC;
    return t.k0 < t.k1;
}

// Q's rows of the tile (bf16 as stored; the scale is applied to S in fp32), row r's 16-byte chunk
// c8 at byte offset at(r, c8) of qs, then the cp.async group is committed (group 0). Padding rows
// and columns past d are zero.
template <int D, class At>
__device__ __forceinline__ void att_load_q(const AttnParams& p, const AttTile& t, int kh, unsigned char* qs, At at) {
    for (int i = threadIdx.x; i < ATT_ROWS * (D / 8); i += ATT_THREADS) {
        const int r = i / (D / 8), c8 = i % (D / 8);
        const bool valid = r < t.rows && c8 * 8 < p.d;
        const bf16* src = valid ? p.q + ((size_t)(t.t0 + r / t.group) * p.nh + kh * t.group + r % t.group) * p.d + c8 * 8 : p.q;
        cp_async16(qs + at(r, c8), src, valid);
    }
    cp_async_commit();
}

// Copies chunk ch of the split into a stage (K tile at ks, V tile v_off bytes on), its pages
// already in pg, then reads chunk ch + 1's pages into pg: loaded one chunk ahead of their copies.
template <int D, class At>
__device__ __forceinline__ void att_copy_chunk(const AttnParams& p, const AttKvAddr<D>& a, const AttTile& t, int (&pg)[AttCopy<D>::ROWS], int ch,
                                               unsigned char* ks, int v_off, At at) {
    constexpr int KC = att_kc(D);
    att_load_chunk<D>(p, a, pg, t.k0 + ch * KC, t.k1, ks, ks + v_off, at);
    att_pages<D>(a, t.pt, t.k0 + (ch + 1) * KC, t.k1, pg);
}

// The key limits within the split of this lane's two rows (C layout: g and g + 8 of the warp's
// 16 from r0); padding rows have limit 0 (no key: P stays 0, l stays 0, nothing written).
__device__ __forceinline__ void att_row_limits(const AttnParams& p, const AttTile& t, int r0, int (&lim)[2]) {
    const int g = threadIdx.x % WARP / 4;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int r = r0 + g + 8 * h;
        lim[h] = r < t.rows ? min(p.tok_limit[t.t0 + r / t.group], t.k1) : 0;
    }
}

// Each row's sum over its quad, then this lane's columns 8n + 2tq, +1 of rows g and g + 8 (from
// r0): with one split normalised into `out`, else unnormalised into part_acc with (m, l) in
// part_ml. o(n, i) is O's fragment n, element i (the C layout).
template <int NT, class O>
__device__ __forceinline__ void att_write_rows(const AttnParams& p, const AttTile& t, int kh, int r0, const float (&m)[2], float (&l)[2], O o) {
    const int lane = threadIdx.x % WARP, g = lane / 4, tq = lane % 4, d = p.d;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
        const int r = r0 + g + 8 * h;
        if (r >= t.rows || l[h] == 0.f) continue;  // padding, or no key of this split (uniform over the quad)
        const size_t row = (size_t)(t.t0 + r / t.group) * p.nh + kh * t.group + r % t.group;
        if (p.num_splits == 1) {
            const float inv = 1.f / l[h];
            bf16* dst = p.out + row * d + 2 * tq;
#pragma unroll
            for (int n = 0; n < NT; n++)
                if (n * 8 < d) *reinterpret_cast<__nv_bfloat162*>(dst + n * 8) = __floats2bfloat162_rn(o(n, 2 * h) * inv, o(n, 2 * h + 1) * inv);
        } else {
            const size_t prow = (size_t)blockIdx.z * p.tokens * p.nh + row;
            float* dst = p.part_acc + prow * d + 2 * tq;
#pragma unroll
            for (int n = 0; n < NT; n++)
                if (n * 8 < d) *reinterpret_cast<float2*>(dst + n * 8) = make_float2(o(n, 2 * h), o(n, 2 * h + 1));
            if (tq == 0) *reinterpret_cast<float2*>(p.part_ml + prow * 2) = make_float2(m[h], l[h]);
        }
    }
}

template <int D>
__device__ __forceinline__ void block_attention_body(const AttnParams& p) {
    constexpr int LD = D + ATT_PAD;  // shared-memory row stride (bf16)
    constexpr int KC = att_kc(D);    // keys a chunk
    constexpr int NT = D / 8;        // O's n8 tiles (head dims)
    constexpr int KT = KC / 8;   // S's n8 tiles (keys of a chunk)
    constexpr int STAGE = 2 * KC * LD;
    constexpr bool Q_IN_REGS = D <= 128;  // d = 256 reloads Q's fragments from shared memory (registers)
    static_assert(ATT_ROWS == (ATT_THREADS / WARP) * 16, "one m16 row tile a warp");
    static_assert(D % 16 == 0 && KC % 16 == 0 && ATT_STAGES >= 2, "whole k16 steps");

    extern __shared__ __align__(128) unsigned char att_smem[];
    constexpr AttSmem L = att_smem_layout(D);
    bf16* qs = reinterpret_cast<bf16*>(att_smem + L.q);
    bf16* kvs = reinterpret_cast<bf16*>(att_smem + L.kv);

    const int kh = blockIdx.y, lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    AttTile t;
    if (!att_tile<KC>(p, t)) return;  // uniform over the CTA
    const int k0 = t.k0, k1 = t.k1, nchunks = t.nchunks;

    att_load_q<D>(p, t, kh, (unsigned char*)qs, att_padded_at<D>);
    // Chunks 0..STAGES-2 in groups 1..STAGES-1 (empty groups past the last chunk keep the count).
    const AttKvAddr<D> kva(p, kh);
    int pg[AttCopy<D>::ROWS];
    att_pages<D>(kva, t.pt, k0, k1, pg);
#pragma unroll
    for (int s = 0; s < ATT_STAGES - 1; s++) {
        if (s < nchunks) att_copy_chunk<D>(p, kva, t, pg, s, (unsigned char*)(kvs + s * STAGE), KC * LD * 2, att_padded_at<D>);
        cp_async_commit();
    }

    const int tq = lane % 4;
    const int r0 = w * 16;
    int lim[2];
    att_row_limits(p, t, r0, lim);
    const float sl2 = p.scale * 1.4426950408889634f;  // scores in log2 units: exp(x) = 2^(x log2 e)
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // per row: running max (log2 units), this lane's part of the sum
    float o[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;

    // ldmatrix lane offsets (see the layouts above): A and V-as-B blocks, and K-as-B blocks.
    const int a_row = lane % 16, a_col = (lane / 16) * 8;
    const int k_row = lane % 8 + (lane / 16) * 8, k_col = ((lane / 8) % 2) * 8;
    const bf16* qw = qs + (r0 + a_row) * LD + a_col;

    uint32_t qf[Q_IN_REGS ? D / 16 : 1][4];
    if constexpr (Q_IN_REGS) {
        cp_async_wait<ATT_STAGES - 1>();  // group 0 (Q) is complete
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) ldsm_x4(qf[kk], qw + kk * 16);
    }

    for (int ch = 0; ch < nchunks; ch++) {
        // Chunk ch is group ch + 1; STAGES - 2 younger groups may still be in flight.
        cp_async_wait<ATT_STAGES - 2>();
        __syncthreads();  // chunk ch (and Q) visible to all; the stage of chunk ch - 1 is free
        {
            const int nx = ch + ATT_STAGES - 1;
            if (nx < nchunks) att_copy_chunk<D>(p, kva, t, pg, nx, (unsigned char*)(kvs + (nx % ATT_STAGES) * STAGE), KC * LD * 2, att_padded_at<D>);
            cp_async_commit();
        }
        const bf16* ks = kvs + (ch % ATT_STAGES) * STAGE;
        const bf16* vs = ks + KC * LD;
        const int kbase = k0 + ch * KC;

        // S = Q K^T: the warp's 16 rows x the chunk's KC keys, KT n8 tiles of accumulators.
        float s[KT][4];
#pragma unroll
        for (int n = 0; n < KT; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t qa[4];
            if constexpr (Q_IN_REGS) {
#pragma unroll
                for (int i = 0; i < 4; i++) qa[i] = qf[kk][i];
            } else {
                ldsm_x4(qa, qw + kk * 16);
            }
#pragma unroll
            for (int n = 0; n < KT; n += 2) {
                uint32_t b[4];
                ldsm_x4(b, ks + (n * 8 + k_row) * LD + kk * 16 + k_col);
                mma_bf16(s[n], qa, b[0], b[1]);
                mma_bf16(s[n + 1], qa, b[2], b[3]);
            }
        }

        // Online softmax. Lane holds keys kbase + 8n + 2tq + {0, 1} of rows g (s[n][0..1]) and
        // g + 8 (s[n][2..3]); the row's other keys are in the quad's other 3 lanes.
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int n = 0; n < KT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int h = e / 2, key = kbase + n * 8 + 2 * tq + e % 2;
                s[n][e] = key < lim[h] ? s[n][e] * sl2 : -INFINITY;
                mx[h] = fmaxf(mx[h], s[n][e]);
            }
        float ref[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
            // A row with no key yet keeps max -inf: subtract 0 instead (its P is 2^-inf = 0, and
            // there is no -inf - -inf).
            ref[h] = mx[h] == -INFINITY ? 0.f : mx[h];
            const float corr = exp2_approx(m[h] - ref[h]);  // 0 the first time (m = -inf)
            m[h] = mx[h];
            l[h] *= corr;
#pragma unroll
            for (int n = 0; n < NT; n++) {
                o[n][2 * h] *= corr;
                o[n][2 * h + 1] *= corr;
            }
        }

        // O += P V, one k16 step (16 keys = S tiles 2j, 2j + 1) at a time: P's A fragment is
        // a0 = (row g, keys 2tq..) = tile 2j's c0 c1, a1 = (row g + 8) = tile 2j's c2 c3,
        // a2 / a3 = the same of tile 2j + 1 (keys + 8).
#pragma unroll
        for (int j = 0; j < KC / 16; j++) {
            uint32_t pa[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float* sn = s[2 * j + i / 2];
                const int h = i % 2;
                pa[i] = pack_bf16(exp2_approx(sn[2 * h] - ref[h]), exp2_approx(sn[2 * h + 1] - ref[h]), l[h]);
            }
#pragma unroll
            for (int n = 0; n < NT; n += 2) {
                uint32_t b[4];
                ldsm_x4_trans(b, vs + (j * 16 + a_row) * LD + n * 8 + a_col);
                mma_bf16(o[n], pa, b[0], b[1]);
                mma_bf16(o[n + 1], pa, b[2], b[3]);
            }
        }
    }
    cp_async_wait<0>();  // no copy may outlive the CTA (the trailing groups are empty)
    att_write_rows<NT>(p, t, kh, r0, m, l, [&](int n, int i) { return o[n][i]; });
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// ---- head dim 128 on Hopper: the same tiles and softmax, the products on wgmma ----------------
// FlashAttention-2 on mma.sync above has every warp load its own fragments of each K/V chunk:
// eight warps read a chunk from shared memory eight times, which bounds the kernel there. Here
// each warpgroup (4 warps, 64 query rows of the tile) multiplies with wgmma, whose operands in
// shared memory are read once for all 64 rows:
//   S (64 x KC) = Q K^T    m64n64k16, Q and K K-major (the head dim contiguous) from shared memory;
//   O (64 x 128) += P V    m64n128k16, P from registers (S's accumulators, rounded to bf16: the
//                          C layout of two n8 tiles is the register A layout of one k16 step,
//                          as for mma.sync), V MN-major (V's rows are keys, the head dim contiguous).
// The accumulators' layout per warp is mma.sync's (rows 16w + g, + 8; columns 8j + 2t, + 1), so
// the online softmax and the epilogue are the code above's. Q, K and V sit in 128-byte-swizzled
// panels of 64 columns ([rows][64] bf16, 1024-byte atoms of 8 rows), the layout wgmma reads; the
// copies land through the generic proxy, so each stage is fenced to the async proxy before the
// barrier that hands it over, and a step's wgmmas are waited for before the next barrier (which
// lets its stage be refilled).

// Byte offset of 16-byte chunk c8 (columns 8 c8..) of row r in a tile of `rows` rows kept as
// swizzled panels of 64 columns.
template <int ROWS>
__device__ __forceinline__ int att_swizzled_at(int r, int c8) { return (c8 / 8) * ROWS * 128 + sw128_offset(r, c8 % 8); }

// The pieces of a chunk that both wgmma bodies run (head dim 128, KC = 64 keys; s[4n + e] is the
// mma.sync body's s[n][e], o[4n + i] its o[n][i]). Issued, not committed: the callers group them.

// S = Q K^T of warpgroup wg's 64 rows over the head dim's 8 k16 steps: step kk is panel kk / 4,
// 32 bytes a step into its swizzled rows (2 in descriptor units).
__device__ __forceinline__ void att_wgmma_s(float (&s)[4 * ATT_KC / 8], const unsigned char* qs, const unsigned char* ks, int wg) {
#pragma unroll
    for (int kk = 0; kk < 128 / 16; kk++) {
        const uint64_t da = sw128_desc(qs + (kk / 4) * ATT_ROWS * 128 + wg * 64 * 128) + 2 * (kk % 4);
        const uint64_t db = sw128_desc(ks + (kk / 4) * ATT_KC * 128) + 2 * (kk % 4);
        wgmma_m64n64k16_bf16(s, da, db, kk > 0);
    }
}
// O += P V: k16 step j is keys 16j.. (two atoms of 8 key rows, 2048 bytes into each panel); the
// head dim's two 64-column panels are KC * 128 bytes apart.
__device__ __forceinline__ void att_wgmma_pv(float (&o)[4 * 128 / 8], const uint32_t (&pa)[ATT_KC / 16][4], const unsigned char* vs) {
#pragma unroll
    for (int j = 0; j < ATT_KC / 16; j++) wgmma_m64n128k16_bf16_rs_tb(o, pa[j], sw128_desc_mn(vs + j * 16 * 128, ATT_KC * 128));
}
// The online softmax of a chunk's S at keys kbase.., as in block_attention_body, with the scores
// left unscaled: the max of the raw scores times sl2 (> 0) is the max of the scaled ones, and
// P = 2^(s sl2 - ref) is one fma into the exp. Only a chunk that reaches past one of the lane's
// two rows' limits (the split's last, or a prefill tile's diagonal) is masked. Leaves the new
// running max in m, the rows' corrections in corr and P's exps in s; O and l are not touched.
__device__ __forceinline__ void att_wgmma_softmax(float (&s)[4 * ATT_KC / 8], const int (&lim)[2], int kbase, float sl2, float (&m)[2],
                                                  float (&corr)[2]) {
    constexpr int KT = ATT_KC / 8;
    const int tq = threadIdx.x % 4;
    if (kbase + ATT_KC > min(lim[0], lim[1])) {
#pragma unroll
        for (int n = 0; n < KT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                if (kbase + n * 8 + 2 * tq + e % 2 >= lim[e / 2]) s[4 * n + e] = -INFINITY;
    }
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < KT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) mx[e / 2] = fmaxf(mx[e / 2], s[4 * n + e]);
    float ref[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
        mx[h] = fmaxf(m[h], mx[h] * sl2);  // log2 units, with the running max
        ref[h] = mx[h] == -INFINITY ? 0.f : mx[h];
        corr[h] = exp2_approx(m[h] - ref[h]);  // 0 the first time (m = -inf)
        m[h] = mx[h];
    }
#pragma unroll
    for (int n = 0; n < KT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[4 * n + e] = exp2_approx(fmaf(s[4 * n + e], sl2, -ref[e / 2]));
}
// O and l rescaled by corr, then P packed as the A fragments of the KC / 16 k16 steps of P V
// (its rounded values summed into l).
__device__ __forceinline__ void att_wgmma_rescale_pack(float (&o)[4 * 128 / 8], float (&l)[2], const float (&corr)[2],
                                                       const float (&s)[4 * ATT_KC / 8], uint32_t (&pa)[ATT_KC / 16][4]) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
        l[h] *= corr[h];
#pragma unroll
        for (int n = 0; n < 128 / 8; n++) {
            o[4 * n + 2 * h] *= corr[h];
            o[4 * n + 2 * h + 1] *= corr[h];
        }
    }
#pragma unroll
    for (int j = 0; j < ATT_KC / 16; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float* sn = s + 4 * (2 * j + i / 2);
            pa[j][i] = pack_bf16(sn[2 * (i % 2)], sn[2 * (i % 2) + 1], l[i % 2]);
        }
}

template <int STAGES>
__device__ __forceinline__ void block_attention_wgmma(const AttnParams& p) {
    constexpr int D = 128, KC = ATT_KC, NT = D / 8, KT = KC / 8;
    constexpr int Q_PANEL = ATT_ROWS * 128;  // bytes of one 64-column panel of Q
    constexpr int KV_BYTES = KC * D * 2, STAGE = 2 * KV_BYTES;
    static_assert(ATT_THREADS == 2 * 128 && ATT_ROWS == 128 && KC == 64, "two warpgroups of 64 rows; S is m64n64");

    extern __shared__ __align__(128) unsigned char att_smem[];
    // Panels start 1024-byte aligned (the swizzle atom): the host's size leaves the slack.
    unsigned char* qs = att_smem + ((1024 - ((uint32_t)__cvta_generic_to_shared(att_smem) & 1023)) & 1023);
    unsigned char* kvs = qs + 2 * Q_PANEL;

    const int kh = blockIdx.y, wg = threadIdx.x / 128, w = (threadIdx.x / WARP) % 4;
    AttTile t;
    if (!att_tile<KC>(p, t)) return;  // uniform over the CTA
    const int k0 = t.k0, nchunks = t.nchunks;

    att_load_q<D>(p, t, kh, qs, att_swizzled_at<ATT_ROWS>);
    const AttKvAddr<D> kva(p, kh);
    int pg[AttCopy<D>::ROWS];
    att_pages<D>(kva, t.pt, k0, t.k1, pg);
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < nchunks) att_copy_chunk<D>(p, kva, t, pg, s, kvs + s * STAGE, KV_BYTES, att_swizzled_at<KC>);
        cp_async_commit();
    }

    // This warpgroup's rows 64 wg..; a warpgroup with none of the tile's rows skips the products
    // (uniform over it, as wgmma needs) but keeps to the barriers.
    const bool live = wg * 64 < t.rows;
    const int r0 = wg * 64 + w * 16;
    int lim[2];
    att_row_limits(p, t, r0, lim);
    const float sl2 = p.scale * 1.4426950408889634f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    float o[4 * NT];
#pragma unroll
    for (int i = 0; i < 4 * NT; i++) o[i] = 0.f;

    for (int ch = 0; ch < nchunks; ch++) {
        cp_async_wait<STAGES - 2>();
        fence_proxy_async();
        __syncthreads();  // chunk ch (and Q) visible to every wgmma; the stage of chunk ch - 1 is free
        {
            const int nx = ch + STAGES - 1;
            if (nx < nchunks) att_copy_chunk<D>(p, kva, t, pg, nx, kvs + (nx % STAGES) * STAGE, KV_BYTES, att_swizzled_at<KC>);
            cp_async_commit();
        }
        if (!live) continue;
        const unsigned char* ks = kvs + (ch % STAGES) * STAGE;
        float s[4 * KT];
        wgmma_fence();
        att_wgmma_s(s, qs, ks, wg);
        wgmma_commit();
        wgmma_wait<0>();
        float corr[2];
        att_wgmma_softmax(s, lim, k0 + ch * KC, sl2, m, corr);
        uint32_t pa[KC / 16][4];
        att_wgmma_rescale_pack(o, l, corr, s, pa);
        wgmma_fence();
        att_wgmma_pv(o, pa, ks + KV_BYTES);
        wgmma_commit();
        wgmma_wait<0>();
    }
    cp_async_wait<0>();
    att_write_rows<NT>(p, t, kh, r0, m, l, [&](int n, int i) { return o[4 * n + i]; });
}

// block_attention_deep's producer warpgroup with the pool's tensor map (p.kv_map): chunk c < whole
// (every key below the split's end) is ATT_KC / box boxes (pages) x 2 panels x K and V of
// p.kv_box_rows positions x 64 columns, which one thread issues by TMA onto the stage's `full`
// mbarrier with their bytes; the other producer threads just arrive. Box j of a chunk is page
// j of its keys (or, where a page holds more than a chunk, the chunk's rows of its one page),
// looked up a chunk ahead by lane j of the first warp. The split's last chunk, when some of its
// keys lie at or past k1, is copied by every producer thread by cp.async as without a map:
// zeros past k1, which P V needs (0 * V), where a TMA box would read whatever the page held
// there. Those copies arrive on `full` as they land (cp.async.mbarrier.arrive.noinc); their
// readers fence them to the async proxy.
// block_attention_deep's threads: two consumer warpgroups, then the producer warpgroup.
constexpr int ATT_DEEP_CONSUMERS = 2 * 128, ATT_DEEP_PRODUCERS = ATT_DEEP_THREADS - ATT_DEEP_CONSUMERS;

template <int STAGES>
__device__ __forceinline__ void att_produce_tma(const AttnParams& p, const AttTile& t, int kh, int whole, unsigned char* kvs,
                                                uint64_t* full, uint64_t* empty) {
    constexpr int D = 128, KC = ATT_KC, PANEL = KC * 128, KV_BYTES = KC * D * 2, STAGE = 2 * KV_BYTES;
    constexpr int PRODUCERS = ATT_DEEP_PRODUCERS;
    const int pt_id = threadIdx.x - ATT_DEEP_CONSUMERS, lane = threadIdx.x % WARP;
    const KvLayout kv(p.kv, p.nkv, p.d);
    const int box = p.kv_box_rows, boxes = KC / box;
    const bool issuer = pt_id < WARP;  // the warp that looks the pages up; its lane 0 issues
    if (pt_id == 0) tma_prefetch_map(p.kv_map);
    // Lane j's page of chunk c (box j), for lanes j < boxes.
    auto page_of = [&](int c) { return lane < boxes && c < whole ? t.pt[kv.page(t.k0 + c * KC + lane * box)] : 0; };
    int next = issuer ? page_of(0) : 0;
    pdl_wait();  // the keys of this step's tokens, written by the kernel before
    for (int c = 0; c < whole; c++) {
        const int s = c % STAGES;
        if (c >= STAGES) mbar_wait(&empty[s], (c / STAGES - 1) & 1);
        if (issuer) {
            const int cur = next;
            next = page_of(c + 1);  // in flight while this chunk is issued and the next waits
            const int slot0 = kv.slot(t.k0 + c * KC);  // 0 unless a page holds more than a chunk
            unsigned char* ks = kvs + s * STAGE;
            if (lane == 0) mbar_arrive_expect_tx(&full[s], STAGE);
            for (int j = 0; j < boxes; j++) {
                const int pg = __shfl_sync(0xffffffffu, cur, j);
                if (lane != 0) continue;
                const int plane = (pg * p.kv.num_layers + p.kv.layer) * 2;  // this page's K of this layer
#pragma unroll
                for (int half = 0; half < 2; half++)
#pragma unroll
                    for (int q = 0; q < 2; q++)
                        tma_load_3d(ks + half * KV_BYTES + q * PANEL + j * box * 128, p.kv_map, kh * D + q * 64, slot0, plane + half, &full[s]);
            }
        }
        mbar_arrive(&full[s]);  // with lane 0's expect-tx, PRODUCERS + 1 arrivals
    }
    if (whole < t.nchunks) {  // the partial last chunk
        using C = AttCopy<D, PRODUCERS>;
        const int c = whole, s = c % STAGES;
        if (c >= STAGES) mbar_wait(&empty[s], (c / STAGES - 1) & 1);
        const AttKvAddr<D> kva(p, kh);  // threadIdx.x % PER_ROW is pt_id % PER_ROW: 256 is a multiple
        int pg[C::ROWS];
        att_pages<D, PRODUCERS>(kva, t.pt, t.k0 + c * KC, t.k1, pg, pt_id);
        unsigned char* ks = kvs + s * STAGE;
        att_load_chunk<D, PRODUCERS>(p, kva, pg, t.k0 + c * KC, t.k1, ks, ks + KV_BYTES, att_swizzled_at<KC>, pt_id);
        cp_async_arrive_noinc(&full[s]);
        if (pt_id == 0) mbar_arrive(&full[s]);  // the arrival the TMA chunks' expect-tx makes
    }
    cp_async_wait<0>();  // no copy outlives its thread
}

// block_attention_deep's body on sm_90a: block_attention_wgmma's tiles and arithmetic, bit for
// bit, warp-specialized (FlashAttention-3's structure). ATT_DEEP_THREADS threads: warpgroups 0
// and 1 are the consumers (query rows 64 wg.., as in block_attention_wgmma) and warpgroup 2 the
// producer, which alone brings K and V into STAGES stages: by TMA from the pool's tensor map
// where the host made one (att_produce_tma; 0.560 against 0.724 ms a batch-1 step at a 32k
// prefix, 78% of the bandwidth against 59% at batch 8: docs/PERF.md, session 19), else by
// cp.async. There is no barrier of the whole CTA in the loop: a stage's `full` mbarrier says its
// chunk has landed (the TMA's bytes; or the producer waits for its copies, fences them to the
// async proxy and arrives) and its `empty` one that both consumers are done with it. So each
// consumer runs at its own pace, and one's softmax can run while the other's products hold the
// tensor cores.
//
// Within a consumer, step ch issues S_ch = Q K_ch^T and then O += P_(ch-1) V_(ch-1), waits for
// S_ch alone, masks it and takes its max and exps while the P V runs, then waits for that,
// rescales O and l, packs P_ch and frees chunk ch - 1's stage. S, P and O are all live at once:
// registers that one CTA an SM affords (two an SM spilled them: docs/PERF.md, session 13's
// att-batched).
template <int STAGES>
__device__ __forceinline__ void block_attention_wgmma_ws(const AttnParams& p) {
    constexpr int D = 128, KC = ATT_KC, NT = D / 8, KT = KC / 8;
    constexpr int Q_PANEL = ATT_ROWS * 128;
    constexpr int KV_BYTES = KC * D * 2, STAGE = 2 * KV_BYTES;
    constexpr int CONSUMERS = ATT_DEEP_CONSUMERS, PRODUCERS = ATT_DEEP_PRODUCERS;
    constexpr int AHEAD = 2;  // chunks a producer thread leaves in flight before it waits for the oldest
    static_assert(ATT_ROWS == 128 && KC == 64 && PRODUCERS == 128, "two consumer warpgroups of 64 rows, one producer");
    static_assert(STAGES >= AHEAD + 2, "the consumers hold two stages (S and P V), the copies in flight the rest");

    extern __shared__ __align__(128) unsigned char att_smem[];
    unsigned char* qs = att_smem + ((1024 - ((uint32_t)__cvta_generic_to_shared(att_smem) & 1023)) & 1023);
    unsigned char* kvs = qs + 2 * Q_PANEL;
    uint64_t* full = reinterpret_cast<uint64_t*>(kvs + STAGES * STAGE);
    uint64_t* empty = full + STAGES;

    const int kh = blockIdx.y, wg = threadIdx.x / 128, w = (threadIdx.x / WARP) % 4;
    // Launched as a programmatic dependent of qk_norm_rope_store (attention.rs), this CTA may run
    // while that kernel still writes Q and this step's K and V: until pdl_wait it reads only the
    // step's layout (tiles, limits, page tables), which the host wrote before the forward. The
    // combine after it may start its CTAs as soon as all of these have.
    pdl_release();
    AttTile t;
    if (!att_tile<KC>(p, t)) return;  // uniform over the CTA
    const int k0 = t.k0, nchunks = t.nchunks;
    // With a tensor map, the chunks whose keys all lie below k1 come by TMA and the split's last
    // chunk, if partial, by cp.async (zero-filled: see att_produce_tma).
    const bool tma = p.kv_map != 0;
    const int whole = tma ? (t.k1 - k0) / KC : 0;
    if (threadIdx.x == 0) {
        for (int i = 0; i < STAGES; i++) {
            mbar_init(&full[i], tma ? PRODUCERS + 1 : PRODUCERS);
            mbar_init(&empty[i], CONSUMERS);
        }
        mbar_init_fence();  // visible to the TMA's complete-tx too
    }
    __syncthreads();  // the barriers are initialised before anyone arrives

    if (wg == 2 && tma) {
        att_produce_tma<STAGES>(p, t, kh, whole, kvs, full, empty);
        return;
    }
    if (wg == 2) {
        // The producer: chunk c into stage c % STAGES once both consumers freed it (its use
        // c / STAGES - 1 done), then `full` of chunk c - AHEAD once that one has landed.
        using C = AttCopy<D, PRODUCERS>;
        const int pt_id = threadIdx.x - CONSUMERS;  // among the copiers
        const AttKvAddr<D> kva(p, kh);
        int pg[C::ROWS];
        auto landed = [&](int c) {  // this thread's copies of chunk c are done (the caller waited)
            fence_proxy_async();
            mbar_arrive(&full[c % STAGES]);
        };
        att_pages<D, PRODUCERS>(kva, t.pt, k0, t.k1, pg, pt_id);
        pdl_wait();  // the keys of this step's tokens, written by the kernel before
        for (int c = 0; c < nchunks; c++) {
            if (c >= STAGES) mbar_wait(&empty[c % STAGES], (c / STAGES - 1) & 1);
            unsigned char* ks = kvs + (c % STAGES) * STAGE;
            att_load_chunk<D, PRODUCERS>(p, kva, pg, k0 + c * KC, t.k1, ks, ks + KV_BYTES, att_swizzled_at<KC>, pt_id);
            cp_async_commit();
            att_pages<D, PRODUCERS>(kva, t.pt, k0 + (c + 1) * KC, t.k1, pg, pt_id);  // a chunk ahead
            if (c >= AHEAD) {
                cp_async_wait<AHEAD>();
                landed(c - AHEAD);
            }
        }
        cp_async_wait<0>();
        for (int c = max(0, nchunks - AHEAD); c < nchunks; c++) landed(c);
        return;
    }

    // The consumers: Q, then the chunks.
    pdl_wait();  // Q, written by the kernel before
    att_load_q<D>(p, t, kh, qs, att_swizzled_at<ATT_ROWS>);  // threads 0..255: ATT_THREADS of them
    cp_async_wait<0>();
    fence_proxy_async();
    asm volatile("bar.sync 1, %0;\n" ::"n"(CONSUMERS) : "memory");  // Q whole, for both consumers

    // A warpgroup with none of the tile's rows computes anyway (on zero Q rows, every key
    // masked: P and l stay 0 and nothing is written): a branch around the wgmmas would make
    // ptxas serialize them.
    const int r0 = wg * 64 + w * 16;
    int lim[2];
    att_row_limits(p, t, r0, lim);
    const float sl2 = p.scale * 1.4426950408889634f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    float o[4 * NT];
#pragma unroll
    for (int i = 0; i < 4 * NT; i++) o[i] = 0.f;
    float s[4 * KT];           // S_ch, then its exps
    uint32_t pa[KC / 16][4];  // P_ch as the A fragments of its P V
    float corr[2];

    auto issue_s = [&](int ch) {
        att_wgmma_s(s, qs, kvs + (ch % STAGES) * STAGE, wg);
        wgmma_commit();
    };
    auto issue_pv = [&](int ch) {
        att_wgmma_pv(o, pa, kvs + (ch % STAGES) * STAGE + KV_BYTES);
        wgmma_commit();
    };

    // A chunk the producers copied by cp.async (generic proxy) is fenced to the async proxy by
    // its readers here (the copying threads arrive without waiting for their copies); without a
    // tensor map they fence it themselves before arriving.
    auto landed = [&](int ch) {
        mbar_wait(&full[ch % STAGES], (ch / STAGES) & 1);
        if (tma && ch >= whole) fence_proxy_async();
    };
    landed(0);
    wgmma_fence();
    issue_s(0);
    wgmma_wait<0>();
    wgmma_reg_fence(s);
    att_wgmma_softmax(s, lim, k0, sl2, m, corr);
    att_wgmma_rescale_pack(o, l, corr, s, pa);
    for (int ch = 1; ch < nchunks; ch++) {
        landed(ch);
        wgmma_fence();
        issue_s(ch);
        issue_pv(ch - 1);
        wgmma_wait<1>();  // S_ch; P_(ch-1) V_(ch-1) may still run
        wgmma_reg_fence(s);
        att_wgmma_softmax(s, lim, k0 + ch * KC, sl2, m, corr);
        wgmma_wait<0>();  // P_(ch-1) V_(ch-1): O whole again, pa free
        wgmma_reg_fence(o);
        mbar_arrive(&empty[(ch - 1) % STAGES]);  // this thread's reads of chunk ch - 1 are done
        att_wgmma_rescale_pack(o, l, corr, s, pa);
    }
    wgmma_fence();
    issue_pv(nchunks - 1);
    wgmma_wait<0>();
    wgmma_reg_fence(o);
    att_write_rows<NT>(p, t, kh, r0, m, l, [&](int n, int i) { return o[4 * n + i]; });
}
#endif

// head_dim <= 64.
extern "C" __global__ void __launch_bounds__(ATT_THREADS, ATT_CTAS_PER_SM) block_attention_d64(const AttnParams p) {
    block_attention_body<64>(p);
}
// 64 < head_dim <= 128 (mini, flash).
// On sm_90a the wgmma path's registers let ATT_WGMMA_CTAS_PER_SM CTAs share an SM (a batch-64
// step's 256 tiles run in one wave; the host's split rule still counts an SM once).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ATT_D128_CTAS_PER_SM ATT_WGMMA_CTAS_PER_SM
#else
#define ATT_D128_CTAS_PER_SM ATT_CTAS_PER_SM
#endif
extern "C" __global__ void __launch_bounds__(ATT_THREADS, ATT_D128_CTAS_PER_SM) block_attention(const AttnParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    block_attention_wgmma<ATT_WGMMA_STAGES>(p);
#else
    block_attention_body<128>(p);
#endif
}
// Head dim 128 at one CTA an SM, warp-specialized with ATT_DEEP_STAGES stages (params.h): the
// host takes it on sm_90a only (CudaBackend::att_deep), where every CTA of the launch has an SM
// to itself. Elsewhere it is never launched (there is no wgmma), and traps if it is.
extern "C" __global__ void __launch_bounds__(ATT_DEEP_THREADS, 1) block_attention_deep(const AttnParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    block_attention_wgmma_ws<ATT_DEEP_STAGES>(p);
#else
    __trap();
#endif
}
// 128 < head_dim <= 256.
extern "C" __global__ void __launch_bounds__(ATT_THREADS, ATT_CTAS_PER_SM) block_attention_d256(const AttnParams p) {
    block_attention_body<256>(p);
}

// Merge the splits of block_attention. p.combine_warps warps (a power of two dividing
// ATT_COMBINE_WARPS) share an output row (token t, query head h), ATT_COMBINE_WARPS /
// combine_warps rows a CTA. Split s holds token t's rows iff s * split_keys < limit(t).
// - Each warp reduces the row's (m, l) over its splits to the global max M and sum L (m in log2
//   units): lane i loads split i's (m, l) once (one 8-byte load), then a max and a sum over the
//   warp.
// - Warp j of the row's group sums splits j, j + combine_warps, .. of O, weighted by
//   2^(m_s - M), each lane 4 columns a 16-byte load, 8 splits' loads in flight; the group's
//   sums meet in shared memory in warp order and the first warp writes O / L.
// The host gives a row more warps where it has more splits (a batch-1 step at a long prefix:
// 33 splits, 512 rows): a warp a row there held 4 loads in flight and 64 CTAs, ~11 us a call
// (docs/PERF.md, session 19). A head dim that is not a multiple of 4 takes one warp a row and a
// column a lane.
constexpr int ATT_COMBINE_ROUND = 8;  // attention_combine's split loads in flight a lane
extern "C" __global__ void __launch_bounds__(ATT_COMBINE_WARPS * WARP) attention_combine(const AttnParams p) {
    __shared__ float4 sums[ATT_COMBINE_WARPS][WARP];
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, d = p.d;
    const int g = p.combine_warps, j = w % g;  // the row's warps, this warp's place among them
    const size_t stride = (size_t)p.tokens * p.nh;  // rows per split
    const size_t row = (size_t)blockIdx.x * (ATT_COMBINE_WARPS / g) + w / g;  // t * nh + h
    const bool live = row < stride;  // uniform over a warp (the CTA meets at barriers below)
    int ns = 0;
    float mm = -INFINITY, ll = 0.f;
    const float* ml = p.part_ml + (live ? row : 0) * 2;
    if (live) {
        const int split_keys = *p.split_keys;
        ns = (p.tok_limit[row / p.nh] + split_keys - 1) / split_keys;
    }
    // Launched as a programmatic dependent of block_attention_deep: the partials are its. The
    // output projection after it (dense_stream at a few rows, also a dependent) may start its CTAs
    // now: they ask for their weights before their own pdl_wait.
    pdl_release();
    pdl_wait();
    if (live) {
        // Split `lane`'s (m, l) stays in registers; the splits past 32 are read again (from L1).
        const float2 v = lane < ns ? *reinterpret_cast<const float2*>(ml + lane * stride * 2) : make_float2(-INFINITY, 0.f);
        float mx = v.x;
        for (int s = lane + WARP; s < ns; s += WARP) mx = fmaxf(mx, ml[s * stride * 2]);
        mm = warp_max(mx);
        ll = lane < ns ? v.y * exp2f(v.x - mm) : 0.f;
        for (int s = lane + WARP; s < ns; s += WARP) ll += ml[s * stride * 2 + 1] * exp2f(ml[s * stride * 2] - mm);
        ll = warp_sum(ll);
    }
    const float inv = 1.f / ll;
    const float* acc = p.part_acc + (live ? row : 0) * d;
    bf16* out = p.out + (live ? row : 0) * d;
    if (d % 4 != 0) {  // g == 1 (the host's rule)
        if (!live) return;
        for (int c = lane; c < d; c += WARP) {
            float a = 0.f;
#pragma unroll 4
            for (int s = 0; s < ns; s++) a += acc[s * stride * d + c] * exp2f(ml[s * stride * 2] - mm);
            out[c] = f2bf(a * inv);
        }
        return;
    }
    for (int c0 = 0; c0 < d; c0 += WARP * 4) {  // uniform over the CTA
        const int c = c0 + lane * 4;
        float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
        if (live && c < d) {
            // The warp's splits j, j + g, .. in split order, ATT_COMBINE_ROUND of them loaded at
            // once (an `unroll 8` loop left a warp's 4-5 splits of a batch-1 step to its
            // remainder, one load and its sum at a time: the sm_90a SASS).
            struct Split {
                float m;
                float4 v;
            };
            in_load_rounds<ATT_COMBINE_ROUND>(
                (ns - j + g - 1) / g,
                [&](int i) {
                    const int s = j + i * g;
                    return Split{ml[s * stride * 2], *reinterpret_cast<const float4*>(acc + s * stride * d + c)};
                },
                [&](int, const Split& sp) {
                    const float f = exp2f(sp.m - mm);
                    a.x += sp.v.x * f;
                    a.y += sp.v.y * f;
                    a.z += sp.v.z * f;
                    a.w += sp.v.w * f;
                });
        }
        if (g > 1) {
            sums[w][lane] = a;
            __syncthreads();
            if (j == 0) {
                for (int i = 1; i < g; i++) {
                    const float4 b = sums[w + i][lane];
                    a.x += b.x;
                    a.y += b.y;
                    a.z += b.z;
                    a.w += b.w;
                }
            }
            __syncthreads();  // sums is rewritten by the next columns
        }
        if (live && c < d && j == 0) {
            reinterpret_cast<__nv_bfloat162*>(out + c)[0] = __floats2bfloat162_rn(a.x * inv, a.y * inv);
            reinterpret_cast<__nv_bfloat162*>(out + c)[1] = __floats2bfloat162_rn(a.z * inv, a.w * inv);
        }
    }
}
