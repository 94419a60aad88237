#include "common.cuh"

// ---------------------------------------------------------------------------------------------
// block_attention + attention_combine: bidirectional block attention as flash-decoding over
// the paged KV cache (GQA, online softmax, fp32 accumulate). Query token t sees keys
// [0, tok_limit[t]) of its sequence (block-causal: its own block and everything before).
//
// Grid (tile, kv head, split). A tile is up to ATT_ROWS query rows = up to 32/group tokens of
// one run x the `group` query heads of KV head `kh` (row r = token r / group, head r % group), so
// every K/V row staged in shared memory serves 32 query rows instead of 1. The CTA walks keys
// [split * split_keys, min(that + split_keys, tile's largest limit)) in chunks of ATT_KC keys, double-buffered: the cp.async copies of chunk c+1 (K and V,
// 16 bytes each, zero-filled past the end) are in flight while chunk c is computed. Each row is
// masked by its own limit (prefill tiles span blocks, so rows of one tile differ).
//
// Two instantiations: block_attention (d <= 128) and block_attention_d256 (d <= 256), so
// the accumulators (8 rows x d/32 columns a lane) are sized for the head dim.
// Work split (128 threads, 4 warps): warp w owns rows 8w..8w+7 in both phases, so the softmax
// statistics never leave the warp. Scores: lane j scores key j of the chunk against the warp's
// 8 rows (q in fp32 shared memory, broadcast reads; K rows padded by 16 bytes so the 32 lanes'
// 16-byte reads are conflict-free). Online softmax per row by warp max/sum. P goes to shared
// memory (only the owning warp reads it back), then P.V: lane j accumulates columns
// 2j + 64i (bf16x2 reads of a V row, contiguous across the warp) for the 8 rows.
//
// Output: with one split the CTA normalises and writes `out`; otherwise it writes the
// unnormalised acc and (m, l) per row to part_acc / part_ml (rows with no key in the split are
// skipped: attention_combine reads split s of token t only when s * split_keys < limit(t), and
// then the row has at least that key).
//
// Predicted cost (mini, batch 1: 32 tokens, 16 q heads / 4 KV heads, d 128, ~1056-1088 keys):
// host picks split_keys = 64 (aiming at ~2 CTAs per SM: 4 tiles x 4 KV heads x 17 splits = 272
// CTAs; 56 KB shared and 162 registers x 128 threads each, so 3 fit an SM: one wave). Bytes: K/V
// of the prefix 1088 x 4 x 128 x 2 x 2 B = 2.2 MB from HBM once (the 4 tiles of a head re-read it from L2), q 0.13 MB, partials
// 17 x 32 x 16 x 130 x 4 B = 4.5 MB written + read back through L2. fp32 FMAs: 2 x 32 x 16 x
// 1088 x 128 = 142 M = ~8.4 k cycles per SM at 128 FMA/clk, ~5 us at full issue, ~10 us at the
// ~50% FMA share of this loop. Measured 2026-11-25 (H100, synchronised per launch): 37 us a
// call; the one-CTA-per-token loop it replaced took 369 us.
// ---------------------------------------------------------------------------------------------
#define ATT_THREADS 128

// 16-byte global -> shared copy that bypasses registers (sm_80+); `valid == false` zero-fills
// the 16 bytes (src-size 0: nothing is read, but `g` must still be a mapped address).
__device__ __forceinline__ void att_cp_async16(void* s, const void* g, bool valid) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(s);
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(g), "r"(n));
}
__device__ __forceinline__ void att_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void att_cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// 8 bf16 in one 16-byte word -> fp32 (bf16 is the top half of an fp32). Loading a uint4 keeps
// the access one 16-byte instruction (a bf16x8 struct load may be split into four).
__device__ __forceinline__ void att_unpack8(const uint4 u, float* f) {
    const unsigned x[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(x[i] << 16);
        f[2 * i + 1] = __uint_as_float(x[i] & 0xffff0000u);
    }
}
#define ATT_ROWS 32  // query rows per tile
#define ATT_RPW 8    // rows per warp (ATT_ROWS / 4 warps)
#define ATT_KC 32    // keys per chunk (one per lane)
#define ATT_PLD (ATT_KC + 4)  // P row stride in floats (16-byte aligned rows)

// Dynamic shared memory of block_attention for head dim d (the host launches with this).
__host__ __device__ inline int att_smem_bytes(int d) {
    int ld = d + 8;
    return ATT_ROWS * d * 4                 // q, fp32, pre-scaled
           + 2 * 2 * ATT_KC * ld * 2        // K and V, two stages, bf16
           + ATT_ROWS * ATT_PLD * 4         // P
           + ATT_ROWS * 4;                  // per-row key limit
}

// Issue the cp.async copies of keys [kbase, kbase + ATT_KC) (K and V rows of head kh) into one
// stage; keys at or past kend are zero-filled (0 * V must stay 0 in P.V).
__device__ __forceinline__ void att_load_chunk(const AttnParams& p, const int32_t* pt, int kh, int kbase, int kend,
                                               bf16* ks, bf16* vs, int ld) {
    int per_row = p.d / 8;
    for (int i = threadIdx.x; i < ATT_KC * per_row; i += ATT_THREADS) {
        int j = i / per_row, c = (i % per_row) * 8;
        int pos = kbase + j;
        bool valid = pos < kend;
        size_t ko = valid ? kv_offset(pt, pos, p.layer, p.num_layers, 0, p.page_size, p.nkv, kh, p.d) : 0;
        // V of a position is page_size * nkv * d elements after its K.
        size_t vo = valid ? ko + (size_t)p.page_size * p.nkv * p.d : 0;
        att_cp_async16(ks + j * ld + c, p.kv + ko + c, valid);
        att_cp_async16(vs + j * ld + c, p.kv + vo + c, valid);
    }
}

// JJ: column pairs per lane in steps of 64 (d <= 64 * JJ); the accumulators are 8 rows x 2 JJ.
template <int JJ>
__device__ __forceinline__ void block_attention_body(const AttnParams& p) {
    extern __shared__ __align__(16) unsigned char att_smem[];
    const int d = p.d, ld = d + 8, group = p.nh / p.nkv;
    float* qs = reinterpret_cast<float*>(att_smem);                     // [ATT_ROWS][d]
    bf16* kst = reinterpret_cast<bf16*>(qs + ATT_ROWS * d);             // [2][ATT_KC][ld]
    bf16* vst = kst + 2 * ATT_KC * ld;                                  // [2][ATT_KC][ld]
    float* ps = reinterpret_cast<float*>(vst + 2 * ATT_KC * ld);        // [ATT_ROWS][ATT_PLD]
    int* lim = reinterpret_cast<int*>(ps + ATT_ROWS * ATT_PLD);         // [ATT_ROWS]

    const int tile = blockIdx.x, kh = blockIdx.y, split = blockIdx.z;
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    const int t0 = p.tiles[2 * tile], nt = p.tiles[2 * tile + 1];
    const int rows = nt * group;
    const int32_t* pt = p.page_table + p.tok_pt[t0];  // one run per tile: one page table

    // The tile's largest key limit bounds the keys any row needs (limits are >= 1).
    int kmax = 0;
    for (int i = 0; i < nt; i++) kmax = max(kmax, p.tok_limit[t0 + i]);
    const int k0 = split * p.split_keys, k1 = min(kmax, k0 + p.split_keys);
    if (k0 >= k1) return;  // uniform over the CTA
    const int nchunks = (k1 - k0 + ATT_KC - 1) / ATT_KC;

    att_load_chunk(p, pt, kh, k0, k1, kst, vst, ld);
    att_cp_async_commit();

    // q (pre-scaled, fp32) and the per-row limits, while chunk 0 is in flight; padding rows are 0.
    for (int i = threadIdx.x; i < ATT_ROWS * (d / 8); i += ATT_THREADS) {
        int r = i / (d / 8), c = (i % (d / 8)) * 8;
        float f[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        if (r < rows) {
            int t = t0 + r / group, h = kh * group + r % group;
            att_unpack8(*reinterpret_cast<const uint4*>(p.q + ((size_t)t * p.nh + h) * d + c), f);
        }
#pragma unroll
        for (int e = 0; e < 8; e++) qs[r * d + c + e] = f[e] * p.scale;
    }
    if (threadIdx.x < ATT_ROWS) {
        int r = threadIdx.x;
        lim[r] = r < rows ? min(p.tok_limit[t0 + r / group], k1) : 0;
    }

    float m[ATT_RPW], l[ATT_RPW], acc[ATT_RPW][2 * JJ];
#pragma unroll
    for (int i = 0; i < ATT_RPW; i++) {
        m[i] = -INFINITY;
        l[i] = 0.f;
#pragma unroll
        for (int j = 0; j < 2 * JJ; j++) acc[i][j] = 0.f;
    }
    const int r0 = w * ATT_RPW;
    float* pw = ps + r0 * ATT_PLD;  // this warp's P rows

    for (int ch = 0; ch < nchunks; ch++) {
        const int kbase = k0 + ch * ATT_KC, st = ch & 1;
        if (ch + 1 < nchunks) {
            // The stage being filled was last read in iteration ch - 1, which ended in a barrier.
            att_load_chunk(p, pt, kh, kbase + ATT_KC, k1, kst + (st ^ 1) * ATT_KC * ld, vst + (st ^ 1) * ATT_KC * ld, ld);
            att_cp_async_commit();
            att_cp_async_wait<1>();
        } else {
            att_cp_async_wait<0>();
        }
        __syncthreads();  // chunk ch (and, the first time, qs / lim) visible to all
        const bf16* ks = kst + st * ATT_KC * ld;
        const bf16* vs = vst + st * ATT_KC * ld;

        // Scores of key `lane` against rows r0..r0+7.
        float s[ATT_RPW];
#pragma unroll
        for (int i = 0; i < ATT_RPW; i++) s[i] = 0.f;
        const bf16* kr = ks + lane * ld;
#pragma unroll 2
        for (int c = 0; c < d; c += 8) {
            float kf[8];
            att_unpack8(*reinterpret_cast<const uint4*>(kr + c), kf);
#pragma unroll
            for (int i = 0; i < ATT_RPW; i++) {
                const float4 a = *reinterpret_cast<const float4*>(qs + (r0 + i) * d + c);
                const float4 b = *reinterpret_cast<const float4*>(qs + (r0 + i) * d + c + 4);
                s[i] += a.x * kf[0] + a.y * kf[1] + a.z * kf[2] + a.w * kf[3] + b.x * kf[4] + b.y * kf[5] + b.z * kf[6] +
                        b.w * kf[7];
            }
        }
        // Online softmax, one row at a time, over the warp (a row's chunk is the warp's 32 keys).
        const int key = kbase + lane;
#pragma unroll
        for (int i = 0; i < ATT_RPW; i++) {
            const bool valid = key < lim[r0 + i];
            const float sv = valid ? s[i] : -INFINITY;
            const float mnew = fmaxf(m[i], warp_max(sv));
            float pj = 0.f, corr = 1.f;
            if (mnew != -INFINITY) {  // uniform over the warp; false while the row has seen no key
                corr = __expf(m[i] - mnew);
                pj = valid ? __expf(sv - mnew) : 0.f;
            }
            l[i] = l[i] * corr + warp_sum(pj);
            m[i] = mnew;
#pragma unroll
            for (int j = 0; j < 2 * JJ; j++) acc[i][j] *= corr;
            pw[i * ATT_PLD + lane] = pj;
        }
        __syncwarp();
        // P.V: lane owns columns 2 * lane + 64 * jj (+1), jj < JJ.
        for (int kk = 0; kk < ATT_KC; kk += 2) {
            float2 pv[ATT_RPW];
#pragma unroll
            for (int i = 0; i < ATT_RPW; i++) pv[i] = *reinterpret_cast<const float2*>(pw + i * ATT_PLD + kk);
#pragma unroll
            for (int u = 0; u < 2; u++) {
                const bf16* vr = vs + (kk + u) * ld;
#pragma unroll
                for (int jj = 0; jj < JJ; jj++) {
                    const int c = 2 * lane + 64 * jj;
                    if (c < d) {
                        const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(vr + c));
#pragma unroll
                        for (int i = 0; i < ATT_RPW; i++) {
                            const float pu = u == 0 ? pv[i].x : pv[i].y;
                            acc[i][2 * jj] += pu * v.x;
                            acc[i][2 * jj + 1] += pu * v.y;
                        }
                    }
                }
            }
        }
        __syncthreads();  // everyone is done with stage st before it is refilled
    }

    // Write this split's result for the warp's rows.
#pragma unroll
    for (int i = 0; i < ATT_RPW; i++) {
        const int r = r0 + i;
        if (r >= rows || l[i] == 0.f) continue;  // padding, or no key of this split (uniform)
        const int t = t0 + r / group, h = kh * group + r % group;
        const size_t row = (size_t)t * p.nh + h;
        if (p.num_splits == 1) {
            const float inv = 1.f / l[i];
#pragma unroll
            for (int jj = 0; jj < JJ; jj++) {
                const int c = 2 * lane + 64 * jj;
                if (c < d)
                    *reinterpret_cast<__nv_bfloat162*>(p.out + row * d + c) =
                        __floats2bfloat162_rn(acc[i][2 * jj] * inv, acc[i][2 * jj + 1] * inv);
            }
        } else {
            const size_t prow = (size_t)split * p.tokens * p.nh + row;
#pragma unroll
            for (int jj = 0; jj < JJ; jj++) {
                const int c = 2 * lane + 64 * jj;
                if (c < d) *reinterpret_cast<float2*>(p.part_acc + prow * d + c) = make_float2(acc[i][2 * jj], acc[i][2 * jj + 1]);
            }
            if (lane == 0) *reinterpret_cast<float2*>(p.part_ml + prow * 2) = make_float2(m[i], l[i]);
        }
    }
}

// d <= 128 (mini, flash): 32 accumulators a thread, 3 CTAs per SM by registers.
extern "C" __global__ void __launch_bounds__(ATT_THREADS, 3) block_attention(const AttnParams p) {
    block_attention_body<2>(p);
}
// 128 < d <= 256.
extern "C" __global__ void __launch_bounds__(ATT_THREADS) block_attention_d256(const AttnParams p) {
    block_attention_body<4>(p);
}

// Merge the splits of block_attention. Grid (token, query head), one thread per output column:
// warp 0 reduces the splits' (m, l) to the global max and 1 / sum, then every thread sums its
// column over the splits with independent loads (the (m) of a split is a broadcast read).
// Split s holds token t's rows iff s * split_keys < limit(t).
extern "C" __global__ void attention_combine(const AttnParams p) {
    const int t = blockIdx.x, h = blockIdx.y, d = p.d;
    const int ns = (p.tok_limit[t] + p.split_keys - 1) / p.split_keys;
    const size_t stride = (size_t)p.tokens * p.nh;  // rows per split
    const size_t row = (size_t)t * p.nh + h;
    __shared__ float s_max, s_inv;
    if (threadIdx.x < WARP) {
        float mm = -INFINITY;
        for (int s = threadIdx.x; s < ns; s += WARP) mm = fmaxf(mm, p.part_ml[(s * stride + row) * 2]);
        for (int o = WARP / 2; o > 0; o /= 2) mm = fmaxf(mm, __shfl_xor_sync(0xffffffffu, mm, o));
        float ll = 0.f;
        for (int s = threadIdx.x; s < ns; s += WARP) ll += p.part_ml[(s * stride + row) * 2 + 1] * __expf(p.part_ml[(s * stride + row) * 2] - mm);
        for (int o = WARP / 2; o > 0; o /= 2) ll += __shfl_xor_sync(0xffffffffu, ll, o);
        if (threadIdx.x == 0) {
            s_max = mm;
            s_inv = 1.f / ll;
        }
    }
    __syncthreads();
    const float mm = s_max;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float a = 0.f;
#pragma unroll 4
        for (int s = 0; s < ns; s++) a += p.part_acc[(s * stride + row) * d + c] * __expf(p.part_ml[(s * stride + row) * 2] - mm);
        p.out[row * d + c] = f2bf(a * s_inv);
    }
}
