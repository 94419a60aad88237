// The routed experts as grouped GEMMs over only the experts that got tokens.
// Grid: (n / GEMM_BN tiles, work items). A work item is (expert, first sorted slot, rows <= BM),
// written by moe_permute; CTAs past the item count exit at once. Each CTA streams a GEMM_BN x k
// slice of the expert's weights through shared memory (cp.async, 16-byte, double-buffered)
// and multiplies the item's gathered rows by it with bf16 WMMA (fp32 accumulate).
//   moe_gate_up: act[slot] = bf16(silu(x w_gate^T) * (x w_up^T)), x = h[slot_token[slot]]
//   moe_down:    out[slot] = bf16(slot_weight[slot] * (act[slot] w_down^T))
// These are the 64-row items (batches whose experts average 12 rows or more); items of a few
// rows go to the weight stream of moe_stream.cu. See docs/PERF.md for what binds here. On sm_90a
// the bf16 items run on wgmma tiles: by default persistent warp-specialized CTAs with TMA weight
// loads (moe_gemm_ws), else one warpgroup a CTA (moe_gemm_wgmma).
// FP8 (W8A16, the `_fp8` kernels): the weights stream as e4m3 (half the bytes), are widened to
// bf16 in shared memory (exact: e4m3 fits in bf16) and multiplied unscaled; each stage's product
// goes into its own accumulator, which is scaled by the tile's block scale (a stage's 64x64 tile
// lies in one 128x128 scale block) and added in f32. So the sum is sum(x * e4m3) * scale_inv per
// block, the CPU twin's x * (e4m3 * scale_inv) up to f32 rounding. On sm_90a, from 8 rows an
// expert (4 at 4096 wide: moe.rs), fp8 runs W8A8 instead (CudaOptions::fp8_activations,
// moe_gemm_wgmma_w8a8): x quantized too (quantize_fp8.cu's quantize_rows_fp8) and both codes
// multiplied on fp8 wgmma.
#include "common.cuh"
#include "cp_async.cuh"
#include "mbarrier.cuh"
#include "moe_items.cuh"
#include "stream.cuh"
#include "tma.cuh"
#include "wgmma.cuh"
#include <cuda_fp8.h>
#include <mma.h>
#include <type_traits>
using namespace nvcuda;

// Dynamic shared memory: params.h's moe_gemm(_fp8)_stage_bytes / moe_gemm(_fp8)_smem_bytes (the
// host launches with the same values).
template <int BM, bool GATED, bool FP8>
struct Smem {
    static constexpr int stage = FP8 ? moe_gemm_fp8_stage_bytes(BM, GATED) : moe_gemm_stage_bytes(BM, GATED);
    static constexpr int bytes = FP8 ? moe_gemm_fp8_smem_bytes(BM, GATED) : moe_gemm_smem_bytes(BM, GATED);
};

// Two e4m3 codes (the low 16 bits, the low byte first) as two bf16 (the low half first): exact,
// every e4m3 value being a bf16 value. (An integer form, the code's bits placed into a bf16 of
// its value times 2^-120 and one bf16 multiply by 2^120, is exact too but made the register tiles
// below 3% slower: seven instructions a pair where these conversions take five. docs/PERF.md,
// session 39.)
__device__ __forceinline__ uint32_t fp8x2_to_bf16x2(uint32_t pair) {
    const float2 f = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(pair & 0xFFFF), __NV_E4M3)));
    return bf16x2_bits(f.x, f.y);
}
// 8 e4m3 codes -> 8 bf16 (exact).
__device__ __forceinline__ uint4 fp8x8_to_bf16x8(uint2 v) {
    uint4 out;
    uint32_t* o = reinterpret_cast<uint32_t*>(&out);
    const uint32_t in[2] = {v.x, v.y};
#pragma unroll
    for (int i = 0; i < 4; i++) o[i] = fp8x2_to_bf16x2(in[i / 2] >> (16 * (i % 2)));
    return out;
}

// BM rows per work item (64: one item per expert reads its weights once instead of once per
// 16 rows). Warp w owns output columns 16w..16w+15 for all BM rows.
template <int BM, bool GATED, bool FP8>
__device__ __forceinline__ void moe_gemm(const MoeGemmParams& p) {
    using S = Smem<BM, GATED, FP8>;
    constexpr int MF = BM / 16;                   // row fragments per warp
    constexpr int XCH = BM * (GEMM_BK / 8) / GEMM_THREADS;  // 16-byte x chunks per thread per stage
    int item = blockIdx.y;
    if (item >= *p.num_items) return;
    int e = p.items[3 * item], s0 = p.items[3 * item + 1], rows = p.items[3 * item + 2];
    int n0 = blockIdx.x * GEMM_BN, tid = threadIdx.x, warp = tid / WARP;
    const size_t wstride = (size_t)p.n * p.k;
    const bf16* w1 = FP8 ? nullptr : p.w1 + e * wstride;
    const bf16* w2 = GATED && !FP8 ? p.w2 + e * wstride : nullptr;
    const uint8_t* q1 = FP8 ? p.w1_fp8 + e * wstride : nullptr;
    const uint8_t* q2 = FP8 && GATED ? p.w2_fp8 + e * wstride : nullptr;
    // This CTA's row of scale blocks of expert e (fp8): [ceil(n/128)][ceil(k/128)] per expert.
    const int scols = (p.k + FP8_BLOCK - 1) / FP8_BLOCK;
    const size_t srow = ((size_t)e * ((p.n + FP8_BLOCK - 1) / FP8_BLOCK) + n0 / FP8_BLOCK) * scols;

    extern __shared__ __align__(1024) unsigned char raw[];
    auto xs = [&](int buf) { return reinterpret_cast<bf16*>(raw + buf * S::stage); };
    // bf16: the stage's weight tiles. fp8: the stage's raw e4m3 tiles [BN][BK] (q1s, q2s), and
    // the one bf16 copy the MMA reads (w1s, w2s for any buf), after both stages.
    auto q1s = [&](int buf) { return reinterpret_cast<uint8_t*>(xs(buf) + BM * GEMM_LDS); };
    auto q2s = [&](int buf) { return q1s(buf) + GEMM_BN * GEMM_BK; };
    auto w1s = [&](int buf) {
        return FP8 ? reinterpret_cast<bf16*>(raw + 2 * S::stage) : xs(buf) + BM * GEMM_LDS;
    };
    auto w2s = [&](int buf) { return w1s(buf) + GEMM_BN * GEMM_LDS; };

    // This thread's x chunks: row xr[i], column xc; rows past the item are zero-filled.
    const int xc = (tid % (GEMM_BK / 8)) * 8;
    const bf16* xsrc[XCH];
    bool xok[XCH];
#pragma unroll
    for (int i = 0; i < XCH; i++) {
        int r = (tid + i * GEMM_THREADS) / (GEMM_BK / 8);
        xok[i] = r < rows;
        xsrc[i] = xok[i] ? p.x + (size_t)(GATED ? p.slot_token[s0 + r] : s0 + r) * p.k : p.x;
    }
    auto load = [&](int buf, int k0) {
        bf16* X = xs(buf);
#pragma unroll
        for (int i = 0; i < XCH; i++) {
            int r = (tid + i * GEMM_THREADS) / (GEMM_BK / 8);
            bool ok = xok[i] && k0 + xc < p.k;
            cp_async16(&X[r * GEMM_LDS + xc], ok ? xsrc[i] + k0 + xc : p.x, ok);
        }
        if constexpr (FP8) {
            // 16 codes a copy (k is a multiple of 16 for fp8: CudaBackend checks).
            uint8_t* Q1 = q1s(buf);
            uint8_t* Q2 = q2s(buf);
#pragma unroll
            for (int i = 0; i < (GEMM_BN * GEMM_BK / 16) / GEMM_THREADS; i++) {
                int c = tid + i * GEMM_THREADS, r = c / (GEMM_BK / 16), col = (c % (GEMM_BK / 16)) * 16;
                bool ok = n0 + r < p.n && k0 + col < p.k;
                size_t off = (size_t)(n0 + r) * p.k + k0 + col;
                cp_async16(&Q1[r * GEMM_BK + col], ok ? q1 + off : p.w1_fp8, ok);
                if (GATED) cp_async16(&Q2[r * GEMM_BK + col], ok ? q2 + off : p.w2_fp8, ok);
            }
        } else {
            bf16* W1 = w1s(buf);
            bf16* W2 = w2s(buf);
#pragma unroll
            for (int i = 0; i < (GEMM_BN * GEMM_BK / 8) / GEMM_THREADS; i++) {
                int c = tid + i * GEMM_THREADS, r = c / (GEMM_BK / 8), col = (c % (GEMM_BK / 8)) * 8;
                bool ok = n0 + r < p.n && k0 + col < p.k;
                size_t off = (size_t)(n0 + r) * p.k + k0 + col;
                cp_async16(&W1[r * GEMM_LDS + col], ok ? w1 + off : p.w1, ok);
                if (GATED) cp_async16(&W2[r * GEMM_LDS + col], ok ? w2 + off : p.w2, ok);
            }
        }
        cp_async_commit();
    };
    // fp8: widen the stage's codes into the bf16 tiles the MMA reads (8 a thread at a time).
    auto widen = [&](int buf) {
#pragma unroll
        for (int i = 0; i < (GEMM_BN * GEMM_BK / 8) / GEMM_THREADS; i++) {
            int c = tid + i * GEMM_THREADS, r = c / (GEMM_BK / 8), col = (c % (GEMM_BK / 8)) * 8;
            *reinterpret_cast<uint4*>(&w1s(buf)[r * GEMM_LDS + col]) =
                fp8x8_to_bf16x8(*reinterpret_cast<const uint2*>(&q1s(buf)[r * GEMM_BK + col]));
            if (GATED)
                *reinterpret_cast<uint4*>(&w2s(buf)[r * GEMM_LDS + col]) =
                    fp8x8_to_bf16x8(*reinterpret_cast<const uint2*>(&q2s(buf)[r * GEMM_BK + col]));
        }
    };

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc1[MF], acc2[MF];
#pragma unroll
    for (int m = 0; m < MF; m++) {
        wmma::fill_fragment(acc1[m], 0.f);
        wmma::fill_fragment(acc2[m], 0.f);
    }
    // Row fragments wholly past the item's rows multiply zeros: skip them.
    const int mf_live = (rows + 15) / 16;
    int ktiles = (p.k + GEMM_BK - 1) / GEMM_BK;
    load(0, 0);
    for (int kt = 0; kt < ktiles; kt++) {
        if (kt + 1 < ktiles) {
            load((kt + 1) & 1, (kt + 1) * GEMM_BK);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        // fp8: this stage's products go to their own accumulators, scaled into acc below.
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> st1[FP8 ? MF : 1], st2[FP8 ? MF : 1];
        if constexpr (FP8) {
            widen(kt & 1);
#pragma unroll
            for (int m = 0; m < MF; m++) {
                wmma::fill_fragment(st1[m], 0.f);
                wmma::fill_fragment(st2[m], 0.f);
            }
            __syncthreads();
        }
        const bf16* X = xs(kt & 1);
        const bf16* W1 = w1s(kt & 1);
        const bf16* W2 = w2s(kt & 1);
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; kk += 16) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b1, b2;
            wmma::load_matrix_sync(b1, &W1[warp * 16 * GEMM_LDS + kk], GEMM_LDS);
            if (GATED) wmma::load_matrix_sync(b2, &W2[warp * 16 * GEMM_LDS + kk], GEMM_LDS);
#pragma unroll
            for (int m = 0; m < MF; m++) {
                if (m >= mf_live) break;
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
                wmma::load_matrix_sync(a, &X[m * 16 * GEMM_LDS + kk], GEMM_LDS);
                if constexpr (FP8) {
                    wmma::mma_sync(st1[m], a, b1, st1[m]);
                    if (GATED) wmma::mma_sync(st2[m], a, b2, st2[m]);
                } else {
                    wmma::mma_sync(acc1[m], a, b1, acc1[m]);
                    if (GATED) wmma::mma_sync(acc2[m], a, b2, acc2[m]);
                }
            }
        }
        if constexpr (FP8) {
            const int sb = (kt * GEMM_BK) / FP8_BLOCK;
            const float s1 = p.w1_scale[srow + sb], s2 = GATED ? p.w2_scale[srow + sb] : 0.f;
#pragma unroll
            for (int m = 0; m < MF; m++) {
                if (m >= mf_live) break;
#pragma unroll
                for (int i = 0; i < acc1[m].num_elements; i++) {
                    acc1[m].x[i] += s1 * st1[m].x[i];
                    if (GATED) acc2[m].x[i] += s2 * st2[m].x[i];
                }
            }
        }
        __syncthreads();  // the buffer is refilled next iteration
    }
    // Epilogue through shared memory (the stages are free now).
    float* o1 = reinterpret_cast<float*>(raw);
    float* o2 = o1 + BM * (GEMM_BN + 4);
#pragma unroll
    for (int m = 0; m < MF; m++) {
        if (m >= mf_live) break;
        wmma::store_matrix_sync(o1 + m * 16 * (GEMM_BN + 4) + warp * 16, acc1[m], GEMM_BN + 4, wmma::mem_row_major);
        if (GATED) wmma::store_matrix_sync(o2 + m * 16 * (GEMM_BN + 4) + warp * 16, acc2[m], GEMM_BN + 4, wmma::mem_row_major);
    }
    __syncthreads();
    for (int i = tid; i < rows * GEMM_BN; i += GEMM_THREADS) {
        int r = i / GEMM_BN, c = i % GEMM_BN;
        if (n0 + c >= p.n) continue;
        size_t slot = s0 + r;
        if (GATED) {
            p.act_out[slot * p.n + n0 + c] = f2bf(silu_f(o1[r * (GEMM_BN + 4) + c]) * o2[r * (GEMM_BN + 4) + c]);
        } else {
            p.slot_out[slot * p.n + n0 + c] = f2bf(o1[r * (GEMM_BN + 4) + c] * p.slot_weight[slot]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The bf16 tiles. A CTA (one warpgroup, 4 warps) takes one item of BM rows and MOE_MMA_WROWS
// weight rows (gated: the gate's rows n0.. and the up's same rows, so a thread holds the gate and
// up sums of the same outputs and the epilogue needs no shared memory), streamed through cp.async
// stages of GEMM_BK with one barrier a k-step. On sm_90a the warpgroup multiplies a stage with
// wgmma (operands straight from the swizzled stage), 64 rows at a time: 128-row items (batch 64
// and up) read an expert's weights once where two 64-row items read them twice. Elsewhere (the
// compute_90 PTX, sm_80) its four warps multiply 64-row items with mma.sync. The WMMA tiles above
// (kept for fp8 off Hopper) ran the bf16 experts at 37-38% of the bandwidth at batch 64; mma.sync
// at 42%; wgmma at 64% (64-row items) and 73% (128-row). Items of 128 rows as two warpgroups
// (one CTA an SM) measured slower.
// The shared expert may be one of the items (expert number p.shared_expert, its own weights).
// ---------------------------------------------------------------------------------------------

// Outputs (col, col + 1) of `slot` from their sums: gated, act = bf16(silu(gate) * up); else
// slot_out = bf16(sum * wt), wt the slot's routing weight (slot_weight_of). Columns past n are
// not written.
template <bool GATED>
__device__ __forceinline__ void store_pair(const MoeGemmParams& p, size_t slot, int col, float s0, float s1, float u0, float u1, float wt) {
    const bool pair = p.n % 2 == 0 && col + 1 < p.n;
    if constexpr (GATED) {
        const float v0 = silu_f(s0) * u0, v1 = silu_f(s1) * u1;
        bf16* out = p.act_out + slot * p.n + col;
        if (pair) {
            *reinterpret_cast<__nv_bfloat162*>(out) = __floats2bfloat162_rn(v0, v1);
        } else {
            if (col < p.n) out[0] = f2bf(v0);
            if (col + 1 < p.n) out[1] = f2bf(v1);
        }
    } else {
        bf16* out = p.slot_out + slot * p.n + col;
        if (pair) {
            *reinterpret_cast<__nv_bfloat162*>(out) = __floats2bfloat162_rn(s0 * wt, s1 * wt);
        } else {
            if (col < p.n) out[0] = f2bf(s0 * wt);
            if (col + 1 < p.n) out[1] = f2bf(s1 * wt);
        }
    }
}

// This thread's cp.async sources of a stage: column c8 of rows r0 + i * ROWS_PER_PASS of the
// item's x (XCH rows) and of the CTA's weight rows (WCH); null past the item or past n (those
// are zero-filled). `tid`: the thread's place among the MOE_TILES_THREADS copying threads.
// E: bf16 (x and the bf16 weights), or uint8_t (the W8A8 tiles: x's e4m3 codes, p.x_fp8, and the
// experts' codes; no shared expert among their items). Either way a stage's row is 128 bytes
// (GEMM_BK bf16, or FP8_BLOCK codes), copied 16 bytes a thread; c8 counts elements.
template <int BM, class E = bf16>
struct TileSources {
    static constexpr bool CODES = sizeof(E) == 1;
    static constexpr int PER_COPY = 16 / sizeof(E);  // elements a 16-byte copy
    static constexpr int ROWS_PER_PASS = MOE_TILES_THREADS / (GEMM_BK / 8);
    static constexpr int XCH = BM / ROWS_PER_PASS;
    static constexpr int WCH = MOE_MMA_WROWS / ROWS_PER_PASS;
    int c8, r0;
    const E* x[XCH];
    const E* w[WCH];
    template <bool GATED>
    __device__ __forceinline__ static TileSources make(const MoeGemmParams& p, int e, int s0, int rows, int n0, int tid = threadIdx.x) {
        TileSources t;
        t.c8 = (tid % (GEMM_BK / 8)) * PER_COPY;
        t.r0 = tid / (GEMM_BK / 8);
        const E* xb;
        if constexpr (CODES) {
            xb = p.x_fp8;
        } else {
            xb = p.x;
        }
#pragma unroll
        for (int i = 0; i < XCH; i++) {
            const int r = t.r0 + i * ROWS_PER_PASS;
            t.x[i] = r < rows ? xb + (size_t)(GATED ? p.slot_token[s0 + r] : s0 + r) * p.k : nullptr;
        }
        // The routed experts' matrices, or the shared expert's: gated, its gate and up ([n][k]
        // each); else its down.
        const E *m1, *m2;
        if constexpr (CODES) {
            m1 = p.w1_fp8 + (size_t)e * p.n * p.k;
            m2 = GATED ? p.w2_fp8 + (size_t)e * p.n * p.k : nullptr;
        } else {
            const bool shared = e == p.shared_expert;
            m1 = shared ? p.shared_w1 : p.w1 + (size_t)e * p.n * p.k;
            m2 = shared ? p.shared_w2 : GATED ? p.w2 + (size_t)e * p.n * p.k : nullptr;
        }
#pragma unroll
        for (int i = 0; i < WCH; i++) {
            const int r = t.r0 + i * ROWS_PER_PASS;
            // Gated: rows [0, WROWS/2) are the gate's n0.., rows [WROWS/2, WROWS) the up's.
            const int n = GATED ? n0 + r % (MOE_MMA_WROWS / 2) : n0 + r;
            const E* m = GATED && r >= MOE_MMA_WROWS / 2 ? m2 : m1;
            t.w[i] = n < p.n ? m + (size_t)n * p.k : nullptr;
        }
        return t;
    }
    // A valid address for the zero-filling copies (which read nothing).
    __device__ __forceinline__ static const E* fallback_x(const MoeGemmParams& p) {
        if constexpr (CODES) {
            return p.x_fp8;
        } else {
            return p.x;
        }
    }
    __device__ __forceinline__ static const E* fallback_w(const MoeGemmParams& p) {
        if constexpr (CODES) {
            return p.w1_fp8;
        } else {
            return p.w1;
        }
    }
    // This thread's copies of the stage at k0 (16 bytes each, zero-filled past the item, past n
    // and past k): x rows into X, weight rows into W, row r's chunk from column c8 at byte offset
    // at(r, c8) of its tile (the stage's layout: padded rows, or the wgmma swizzle; in bf16
    // columns, so a code chunk's column is halved).
    template <class At>
    __device__ __forceinline__ void copy_x(unsigned char* X, int k0, const MoeGemmParams& p, At at) const {
        const bool kin = k0 + c8 < p.k;
#pragma unroll
        for (int i = 0; i < XCH; i++) {
            const bool ok = kin && x[i];
            cp_async16(X + at(r0 + i * ROWS_PER_PASS, CODES ? c8 / 2 : c8), ok ? x[i] + k0 + c8 : fallback_x(p), ok);
        }
    }
    template <class At>
    __device__ __forceinline__ void copy_w(unsigned char* W, int k0, const MoeGemmParams& p, At at) const {
        const bool kin = k0 + c8 < p.k;
#pragma unroll
        for (int i = 0; i < WCH; i++) {
            const bool ok = kin && w[i];
            cp_async16(W + at(r0 + i * ROWS_PER_PASS, CODES ? c8 / 2 : c8), ok ? w[i] + k0 + c8 : fallback_w(p), ok);
        }
    }
};

// The routing weight store_pair scales a down row by, read once a row: read in store_pair, it
// was loaded again before each of the row's stores (the compiler cannot tell that the bf16
// stores leave it alone), a dependent load each in every epilogue.
template <bool GATED>
__device__ __forceinline__ float slot_weight_of(const MoeGemmParams& p, size_t slot) {
    return GATED ? 0.f : p.slot_weight[slot];
}

// Byte offsets of (row, column c8) in the stages' two layouts: rows of GEMM_LDS bf16 (padded to
// spread banks, the mma.sync path) and the 128-byte swizzle wgmma reads.
__device__ __forceinline__ int padded_at(int r, int c8) { return (r * GEMM_LDS + c8) * 2; }
__device__ __forceinline__ int swizzled_at(int r, int c8) { return sw128_offset(r, c8 / 8); }

// The tiles' cp.async pipeline over ktiles k-steps of KSTEP (GEMM_BK bf16 columns; the W8A8
// tiles' FP8_BLOCK codes) through ST buffers: load(buf, k0)
// issues a stage's copies, step(buf, kt) consumes stage kt once it has landed for every thread.
// Stages are loaded ST - 1 k-steps early; the one barrier a k-step also tells that every thread
// is past step kt - 1, whose buffer the next load refills. ASYNC_PROXY: the step's wgmmas read
// the stage, so the landed copies are made visible to the async proxy before that barrier.
// first(buf, k0) issues the first ST - 1 stages' copies instead (what load left for them: down's
// weights come before its wait for the act rows, moe_gemm_wgmma).
template <int ST, bool ASYNC_PROXY, int KSTEP = GEMM_BK, class First, class Load, class Step>
__device__ __forceinline__ void tile_pipeline(int ktiles, First first, Load load, Step step) {
#pragma unroll
    for (int s = 0; s < ST - 1; s++) {
        if (s < ktiles) first(s, s * KSTEP);
        cp_async_commit();
    }
    for (int kt = 0; kt < ktiles; kt++) {
        cp_async_wait<ST - 2>();
        if constexpr (ASYNC_PROXY) fence_proxy_async();
        __syncthreads();
        if (kt + ST - 1 < ktiles) load((kt + ST - 1) % ST, (kt + ST - 1) * KSTEP);
        cp_async_commit();
        step(kt % ST, kt);
    }
    cp_async_wait<0>();  // no copy may outlive the CTA (the trailing groups are empty)
}
template <int ST, bool ASYNC_PROXY, int KSTEP = GEMM_BK, class Load, class Step>
__device__ __forceinline__ void tile_pipeline(int ktiles, Load load, Step step) {
    tile_pipeline<ST, ASYNC_PROXY, KSTEP>(ktiles, load, load, step);
}

// mma.sync: warp w multiplies the item's 64 rows by its 32 weight rows: per k16, four A
// fragments and two B fragment pairs (ldmatrix.x4 each) feed 16 MMAs.
template <int BM, bool GATED>
__device__ __forceinline__ void moe_gemm_mma(const MoeGemmParams& p, int e, int s0, int rows, int n0) {
    static_assert(BM == MOE_BM_LARGE, "the mma.sync tiles take 64-row items");
    constexpr int WR = MOE_MMA_WROWS, BK = GEMM_BK, LDS = GEMM_LDS, ST = MOE_MMA_STAGES, row0 = 0;
    using T = TileSources<BM>;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    extern __shared__ __align__(1024) unsigned char raw[];
    auto xs = [&](int buf) { return reinterpret_cast<bf16*>(raw + buf * moe_mma_stage_bytes(BM)); };
    auto ws = [&](int buf) { return xs(buf) + BM * LDS; };
    const T src = T::template make<GATED>(p, e, s0, rows, n0);
    auto load = [&](int buf, int k0) {
        src.copy_x(reinterpret_cast<unsigned char*>(xs(buf)), k0, p, padded_at);
        src.copy_w(reinterpret_cast<unsigned char*>(ws(buf)), k0, p, padded_at);
    };

    // acc[m][j]: rows row0 + 16m.., the warp's n8 fragment j (gated: j < 2 the gate's, j >= 2
    // the up's).
    float acc[4][4][4];
#pragma unroll
    for (int m = 0; m < 4; m++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[m][j][c] = 0.f;
    // Row fragments wholly past the item's rows multiply zeros: skip them.
    const int mf_live = min(4, max(0, (rows - row0 + 15) / 16));
    // The warp's two 16-row groups of weights (gated: its gate rows and the same up rows).
    const int wg0 = GATED ? warp * 16 : warp * 32, wg1 = GATED ? WR / 2 + warp * 16 : warp * 32 + 16;
    // ldmatrix row addresses: A tile q = lane / 8 is (rows +8 if q odd, k +8 if q >= 2); B tile q
    // is (weight rows +8 if q >= 2, k +8 if q odd): fragments in mma's a0..a3 and b0, b1 order.
    const int a_row = row0 + lane % 16, a_col = (lane / 16) * 8;
    const int b_row = lane % 8 + (lane / 16) * 8, b_col = ((lane / 8) % 2) * 8;

    tile_pipeline<ST, false>((p.k + BK - 1) / BK, load, [&](int buf, int) {
        const bf16* X = xs(buf);
        const bf16* W = ws(buf);
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            if (mf_live == 0) break;
            uint32_t b0[4], b1[4];
            ldsm_x4(b0, &W[(wg0 + b_row) * LDS + kk + b_col]);
            ldsm_x4(b1, &W[(wg1 + b_row) * LDS + kk + b_col]);
#pragma unroll
            for (int m = 0; m < 4; m++) {
                if (m >= mf_live) break;
                uint32_t a[4];
                ldsm_x4(a, &X[(m * 16 + a_row) * LDS + kk + a_col]);
                mma_bf16_16816(acc[m][0], a[0], a[1], a[2], a[3], b0[0], b0[1]);
                mma_bf16_16816(acc[m][1], a[0], a[1], a[2], a[3], b0[2], b0[3]);
                mma_bf16_16816(acc[m][2], a[0], a[1], a[2], a[3], b1[0], b1[1]);
                mma_bf16_16816(acc[m][3], a[0], a[1], a[2], a[3], b1[2], b1[3]);
            }
        }
    });

    // Epilogue from the fragments: c0, c1 are row lane / 4, columns 2 (lane % 4) + {0, 1};
    // c2, c3 the same columns 8 rows down.
#pragma unroll
    for (int m = 0; m < 4; m++) {
        if (m >= mf_live) break;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = row0 + m * 16 + lane / 4 + 8 * h;
            if (r >= rows) continue;
            const float wt = slot_weight_of<GATED>(p, s0 + r);
#pragma unroll
            for (int j = 0; j < (GATED ? 2 : 4); j++) {
                const int col = n0 + warp * (GATED ? 16 : 32) + j * 8 + (lane % 4) * 2;
                // Gated: fragment j + 2 holds the up's sums for the gate's fragment j.
                const float* up = GATED ? acc[m][j + 2] : acc[m][j];
                store_pair<GATED>(p, s0 + r, col, acc[m][j][2 * h], acc[m][j][2 * h + 1], up[2 * h], up[2 * h + 1], wt);
            }
        }
    }
}

// The routing weights of a warpgroup thread's rows (row 64h + 16 warp + lane / 4 + 8i: wt[h][i]) for
// down's epilogue (gate_up's take none). Loaded before the unit's k-steps, so that their latency
// passes under the products: loaded in the epilogue, each row's waited for the row before's stores
// (the compiler cannot tell that the bf16 stores leave them alone).
template <int H, bool GATED>
__device__ __forceinline__ void load_row_weights(const MoeGemmParams& p, int s0, int rows, float (&wt)[H][2]) {
    const int warp = threadIdx.x / WARP % 4, lane = threadIdx.x % WARP;
#pragma unroll
    for (int h = 0; h < H; h++)
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int r = h * 64 + warp * 16 + lane / 4 + 8 * i;
            wt[h][i] = r < rows ? slot_weight_of<GATED>(p, s0 + r) : 1.f;
        }
}

// A warpgroup's wgmma sums (H halves of 64 rows by its 128 weight rows) out: d[h][4j + i] is row
// 64h + 16 warp + lane / 4 (+8 for i >= 2), column 8j + 2 (lane % 4) + i % 2 of its weight rows
// from output column c0 (gated: j < 8 the gate's, j + 8 the same up column); wt from
// load_row_weights. Down, where n is a multiple of 8: a quad's lanes trade their columns and each
// stores whole 8-column groups (store_quad_row), 16-byte stores that write a row's 32-byte
// sectors whole, where each lane's own pairs were 4-byte stores of half a sector. Down writes a
// hidden-size row a slot (batch 128: 134 MB a layer beside 312 MB of weights read); with this and
// the weights loaded early it took 8-21% less time from batch 16 to 128 (docs/PERF.md, session 26).
// gate_up's act rows the same way measured level (7-15% slower where silu also ran on the rows
// past the item, which store_pair skips): it writes 32 KB a unit after 32 k-steps, where down
// writes 64 KB after 8. So gate_up, and an n that is not a multiple of 8, go through store_pair.
template <int H, bool GATED>
__device__ __forceinline__ void store_warpgroup_rows(const MoeGemmParams& p, const float (&d)[H][64], const float (&wt)[H][2], int s0, int rows,
                                                     int c0) {
    constexpr int G = GATED ? 8 : 16;  // the thread's 8-column groups a row
    const int warp = threadIdx.x / WARP % 4, lane = threadIdx.x % WARP, q = lane % 4;
    if (!GATED && p.n % 8 == 0) {
        bf16* out = p.slot_out;
#pragma unroll
        for (int h = 0; h < H; h++) {
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int r = h * 64 + warp * 16 + lane / 4 + 8 * i;
                uint32_t v[G];
#pragma unroll
                for (int j = 0; j < G; j++) {
                    v[j] = bf16x2_bits(d[h][4 * j + 2 * i] * wt[h][i], d[h][4 * j + 2 * i + 1] * wt[h][i]);
                }
                store_quad_row(out + (size_t)(s0 + r) * p.n, c0, p.n, v, r < rows);
            }
        }
        return;
    }
#pragma unroll
    for (int h = 0; h < H; h++) {
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int r = h * 64 + warp * 16 + lane / 4 + 8 * i;
            if (r >= rows) continue;
#pragma unroll
            for (int j = 0; j < G; j++) {
                const int col = c0 + j * 8 + q * 2;
                const float* up = GATED ? &d[h][4 * (j + 8)] : &d[h][4 * j];
                store_pair<GATED>(p, s0 + r, col, d[h][4 * j + 2 * i], d[h][4 * j + 2 * i + 1], up[2 * i], up[2 * i + 1], wt[h][i]);
            }
        }
    }
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// wgmma: the warpgroup multiplies each 64-row half of the stage's x tile that holds rows of the
// item by the 128 x 64 weight tile as four m64n128k16 (the next 16 columns are 32 bytes further
// into the swizzled rows), then waits for them before the barrier that lets the stage be
// refilled. Stages start 1024-byte aligned (the swizzle atom), hence the rounding of the base and
// the 1 KB of slack the host adds.
template <int BM, bool GATED>
__device__ __forceinline__ void moe_gemm_wgmma(const MoeGemmParams& p, const TileItem& it, int n0) {
    const int e = it.e, s0 = it.s0, rows = it.rows;
    constexpr int BK = GEMM_BK, ST = moe_wgmma_tiles_stages(BM), H = BM / 64;
    using T = TileSources<BM>;
    extern __shared__ __align__(1024) unsigned char raw[];
    unsigned char* base = raw + ((1024 - ((uint32_t)__cvta_generic_to_shared(raw) & 1023)) & 1023);
    auto xs = [&](int buf) { return base + buf * moe_wgmma_stage_bytes(BM); };
    auto ws = [&](int buf) { return xs(buf) + moe_wgmma_x_bytes(BM); };
    const T src = T::template make<GATED>(p, e, s0, rows, n0);
    auto load = [&](int buf, int k0) {
        src.copy_x(xs(buf), k0, p, swizzled_at);
        src.copy_w(ws(buf), k0, p, swizzled_at);
    };
    const int ktiles = (p.k + BK - 1) / BK;
    // Programmatic dependent launch (CudaOptions::expert_pdl; kernels.rs, launch_dependent): gate_up
    // has let its down start CTAs (moe_gemm_bf16), and down, which reads nothing gate_up writes
    // but the act rows (the items, routing weights and weights come from the router and the
    // checkpoint), asks for its first stages' weights before it waits for the act rows gate_up
    // writes: for its own item's gate_up CTAs where they count themselves (item_done_wait), else
    // for gate_up's end. So down's weights stream in while gate_up's last CTAs finish, where
    // down's launch and first DRAM latency followed them.
    if constexpr (!GATED) {
#pragma unroll
        for (int s = 0; s < ST - 1; s++)
            if (s < ktiles) src.copy_w(ws(s), s * BK, p, swizzled_at);
        item_done_wait(p, it);
    }
    // (Their commit group is the first stage's, so the pipeline's waits stay conservative.)
    auto first = [&](int buf, int k0) {
        src.copy_x(xs(buf), k0, p, swizzled_at);
        if constexpr (GATED) src.copy_w(ws(buf), k0, p, swizzled_at);
    };
    float d[H][64], wt[H][2];
    load_row_weights<H, GATED>(p, s0, rows, wt);
#pragma unroll
    for (int h = 0; h < H; h++)
#pragma unroll
        for (int i = 0; i < 64; i++) d[h][i] = 0.f;
    // Each step's wgmmas are waited for before the next step's barrier, so its buffer may be
    // refilled then.
    tile_pipeline<ST, true>(ktiles, first, load, [&](int buf, int) {
        const uint64_t db = sw128_desc(ws(buf));
        wgmma_fence();
#pragma unroll
        for (int h = 0; h < H; h++) {
            if (h * 64 >= rows) break;  // a half with no row of the item multiplies zeros
            // Half h's A: rows 64h.. of the x tile (8 atoms of 1024 bytes further on).
            const uint64_t da = sw128_desc(xs(buf) + h * 64 * 128);
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) wgmma_m64n128k16_bf16(d[h], da + 2 * kk, db + 2 * kk);
        }
        wgmma_commit();
        wgmma_wait<0>();
    });
    store_warpgroup_rows<H, GATED>(p, d, wt, s0, rows, n0);
}
#endif

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// A warp-specialized gate_up unit's rows stored by consumer warpgroup g: counted in its item's
// counter (MoeGemmParams::item_done; MOE_WS_WGS counts a unit) once the warpgroup's threads are
// past their stores (named barrier 2 + g: the producers hold 1).
__device__ __forceinline__ void ws_unit_done(const MoeGemmParams& p, int item, int g, bool and_next = false) {
    if (p.item_done == nullptr) return;
    asm volatile("bar.sync %0, %1;\n" ::"r"(2 + g), "r"(MOE_WG_THREADS) : "memory");
    if (threadIdx.x % MOE_WG_THREADS == 0) {
        release_count(p.item_done + item);
        if (and_next) release_count(p.item_done + item + 1);
    }
}

// gate_up's 192-row units over a list of 128-row items (moe_gate_up_m192_ws): an expert's last
// two items, 128 rows and at most 64, are one unit, which the first names. The rows of item
// `item`'s unit: its own, with the next item's where it takes them, or 0 where the item before
// took its rows. Down keeps the 128-row items (as 192-row units it ran 6% slower at batch 128:
// likely its 8 k-steps a unit too few for the longer epilogue; docs/PERF.md, session 50).
__device__ __forceinline__ bool ws_merges_next(const MoeGemmParams& p, int item) {
    const int* a = p.items + 3 * item;
    return item + 1 < *p.num_items && a[2] == MOE_BM_XLARGE && a[3] == a[0] && a[5] <= MOE_BM_XXLARGE - MOE_BM_XLARGE;
}
__device__ __forceinline__ int ws_unit_rows(const MoeGemmParams& p, int item) {
    if (item > 0 && ws_merges_next(p, item - 1)) return 0;
    return p.items[3 * item + 2] + (ws_merges_next(p, item) ? p.items[3 * item + 5] : 0);
}
// The rows a unit of `item` multiplies: its 192-row unit's (H == 3), else the item's own.
template <int H>
__device__ __forceinline__ int ws_rows(const MoeGemmParams& p, int item) {
    return H == 3 ? ws_unit_rows(p, item) : p.items[3 * item + 2];
}

// The bf16 tiles as persistent, warp-specialized CTAs (one an SM, MOE_WS_THREADS threads): two
// consumer warpgroups and MOE_WS_PRODUCER_WARPS producer warps. A CTA takes the (item, column
// tile) units in order from a counter as it comes free (producer 0 takes the next one and names
// it to the consumers in the unit's first stage); a unit is the item's BM rows by MOE_WS_WGS x
// MOE_MMA_WROWS weight rows (64-row items: each consumer warpgroup the rows by its
// MOE_MMA_WROWS, laid out as the one-warpgroup tiles' are; 128-row items: each its 64 rows by all
// of them, below). The producers stream
// every unit's k-steps, back to back across units, into a ring of moe_ws_stages(BM) stages: the
// weight tile by TMA (four boxes of 64 rows x GEMM_BK from the experts' 3-D tensor maps, zeros
// past n and k), the item's x rows by cp.async (gathered by slot for gate_up). A stage's `full`
// mbarrier completes when both have landed (the TMA bytes, and the arrival each producer thread's
// copies make when they are done: cp.async.mbarrier.arrive.noinc); its `empty` one when every
// consumer thread's wgmmas that read it are done. So nothing waits on a CTA-wide barrier or on
// its own copies, and a unit's epilogue runs while the producers already bring the next unit's
// first stages.
template <int BM, bool GATED>
__device__ __forceinline__ void moe_gemm_ws(const MoeGemmParams& p) {
    constexpr int BK = GEMM_BK, H = BM / 64, ST = moe_ws_stages(BM);
    constexpr int XB = moe_wgmma_x_bytes(BM), BOX = MOE_WS_BOX_ROWS * BK * 2, STAGE = moe_ws_stage_bytes(BM);
    static_assert(H < 3 || GATED, "192-row units are gate_up's (over 128-row items: ws_unit_rows)");
    constexpr int CONSUMERS = MOE_WS_WGS * MOE_WG_THREADS, BOXES = MOE_WS_WGS * MOE_MMA_WROWS / MOE_WS_BOX_ROWS;
    constexpr int COLS = GATED ? MOE_WS_GATE_UP_COLS : MOE_WS_DOWN_COLS;
    constexpr int PRODUCERS = MOE_WS_PRODUCERS;
    static_assert(MOE_WS_THREADS == CONSUMERS + PRODUCERS, "two consumer warpgroups and the producer warps");
    // The producers copy an item's x tile as the one-warpgroup tiles' threads do (TileSources).
    static_assert(PRODUCERS == MOE_TILES_THREADS, "the producer warps copy x as one warpgroup");
    using T = TileSources<BM>;
    extern __shared__ __align__(1024) unsigned char raw[];
    unsigned char* base = raw + ((1024 - ((uint32_t)__cvta_generic_to_shared(raw) & 1023)) & 1023);
    uint64_t* full = reinterpret_cast<uint64_t*>(base + ST * STAGE);
    uint64_t* empty = full + ST;
    // unit_of[s]: the unit whose first k-step stage s holds (written with it by the producer
    // that takes the unit; past the last unit, `units`: the consumers stop). grabbed[2]: the unit
    // producer 0 took, for the other producers (two, by the parity of the units taken).
    int* unit_of = reinterpret_cast<int*>(empty + ST);
    int* grabbed = unit_of + ST;
    const int tiles = (p.n + COLS - 1) / COLS, units = *p.num_items * tiles, ktiles = (p.k + BK - 1) / BK;
    if (threadIdx.x == 0) {
        for (int s = 0; s < ST; s++) {
            mbar_init(&full[s], PRODUCERS + 1);  // the producer threads, and the expect-tx arrival
            mbar_init(&empty[s], CONSUMERS);
        }
        mbar_init_fence();  // visible to the TMA's complete-tx too
    }
    __syncthreads();  // the barriers are initialised before anyone arrives

    // The units are taken in order from p.unit_counter as CTAs come free, not gridDim.x apart: so
    // the items of one expert (consecutive) have their column tiles streamed at about the same
    // time, and the second reads the expert's weights from the L2 the first filled. With a fixed
    // stride the CTAs drift apart by whole units, and the weights came from DRAM about 1.5 times
    // (ncu, batch 128: 964 MB read for 624 MB of gate_up weights; in order, 776 MB; the tiles
    // 3-6% faster: docs/PERF.md, session 25).
    // gate_up lets its down start CTAs as their SMs come free (where down is its programmatic
    // dependent: with item counters, moe.rs); down reads the items before any wait (the permute
    // wrote them before gate_up started).
    if constexpr (GATED) pdl_release();
    if (threadIdx.x >= CONSUMERS) {
        // 192-row items: the producers give registers to the consumers' third accumulator.
        if constexpr (H == 3) setmaxnreg_dec<MOE_WS_M192_PRODUCER_REGS>();
        const int pt = threadIdx.x - CONSUMERS;
        if (pt == 0) {
            tma_prefetch_map(p.w1_map);
            if (GATED) tma_prefetch_map(p.w2_map);
            if (p.shared_expert >= 0) {
                tma_prefetch_map(p.shared_w1_map);
                if (GATED) tma_prefetch_map(p.shared_w2_map);
            }
        }
        int it = 0;  // stages issued, over all of this CTA's units
        for (int taken = 0;; taken++) {
            if (pt == 0) {
                int u = atomicAdd(p.unit_counter, 1);
                // 192-row units: an item merged into the one before has no units of its own.
                while (H == 3 && u < units && ws_unit_rows(p, u / tiles) == 0) u = atomicAdd(p.unit_counter, 1);
                grabbed[taken & 1] = u;
                // Down: the unit's x is its item's act rows; with item counters, wait for the
                // item's gate_up units (MoeGemmParams::item_done), else gate_up has ended (a
                // plain launch). The barrier below holds the other producers behind it.
                if (!GATED && p.item_done_target > 0 && u < units) wait_count(p.item_done + u / tiles, p.item_done_target);
            }
            asm volatile("bar.sync 1, %0;\n" ::"r"(PRODUCERS) : "memory");  // the producers only
            const int u = min(grabbed[taken & 1], units);
            if (u == units) {  // no unit left: one last stage tells the consumers so
                const int s = it % ST;
                if (it >= ST) mbar_wait(&empty[s], (it / ST - 1) & 1);
                if (pt == 0) {
                    unit_of[s] = units;
                    mbar_arrive(&full[s]);  // the expect-tx arrival's place, with no bytes
                }
                cp_async_arrive_noinc(&full[s]);
                break;
            }
            const int item = u / tiles, n0 = (u % tiles) * COLS;
            const int e = p.items[3 * item], s0 = p.items[3 * item + 1], rows = ws_rows<H>(p, item);
            const T src = T::template make<GATED>(p, e, s0, rows, n0, pt);  // its x rows (the weights come by TMA)
            for (int kt = 0; kt < ktiles; kt++, it++) {
                const int s = it % ST, k0 = kt * BK;
                if (it >= ST) mbar_wait(&empty[s], (it / ST - 1) & 1);
                unsigned char* X = base + s * STAGE;
                if (pt == 0) {
                    if (kt == 0) unit_of[s] = u;  // released to the consumers by the arrival below
                    mbar_arrive_expect_tx(&full[s], BOXES * BOX);
                    // Box j: weight rows 64j.. of the stage; gated, warpgroup j / 2's gate (j even)
                    // or up (j odd) rows n0 + 64 (j / 2)..; down, rows n0 + 64j.. The shared
                    // expert's come through its own maps (its weights lie outside the experts').
                    const bool shared = e == p.shared_expert;
                    const void* w1 = shared ? p.shared_w1_map : p.w1_map;
                    const void* w2 = shared ? p.shared_w2_map : p.w2_map;
#pragma unroll
                    for (int j = 0; j < BOXES; j++) {
                        const int n = n0 + MOE_WS_BOX_ROWS * (GATED ? j / 2 : j);
                        tma_load_3d(X + XB + j * BOX, GATED && (j & 1) ? w2 : w1, k0, n, shared ? 0 : e, &full[s]);
                    }
                }
                src.copy_x(X, k0, p, swizzled_at);
                cp_async_arrive_noinc(&full[s]);
            }
        }
        cp_async_wait<0>();  // no copy outlives its thread
        return;
    }

    if constexpr (H == 3) setmaxnreg_inc<MOE_WS_M192_CONSUMER_REGS>();
    const int g = threadIdx.x / MOE_WG_THREADS;
    int it = 0;  // stages consumed, in the producer's order
    // Each unit's first stage names it (the stage past the last unit names none).
    auto next_unit = [&]() {
        mbar_wait(&full[it % ST], (it / ST) & 1);
        return unit_of[it % ST];
    };
    // The output columns a warpgroup's MOE_MMA_WROWS weight rows hold (gated: gate and up rows).
    constexpr int WG_COLS = GATED ? MOE_MMA_GATE_UP_COLS : MOE_MMA_DOWN_COLS;
    if constexpr (H >= 2) {
        // 128-row items: warpgroup g takes the item's rows 64g.. by all the stage's weight rows,
        // one m64n256k16 a k16 (the 256 rows are the boxes in order: gated, the gate's and the
        // up's rows of output columns n0.., then of n0 + 64..). Each k16 then reads A once and
        // B once a warpgroup, where two m64n128k16 halves read B twice: 20 KB of shared memory
        // a k16 for both warpgroups instead of 24, beside the 12 KB the copies write (batch 128:
        // gate_up 2% and down 3% faster, the steps at batch 64 and 128 2%: docs/PERF.md,
        // session 34).
        // Accumulator half c (lo, hi) is the one-warpgroup tiles' d for output columns from
        // n0 + c WG_COLS, rows 64g...
        // 192-row units (gate_up, H == 3; ws_unit_rows): the unit's rows 128.. as well,
        // warpgroup g by its own MOE_MMA_WROWS of the stage's weight rows (ex: the one-warpgroup
        // tiles' d for output columns from n0 + g WG_COLS), one m64n128k16 a k16 beside the
        // m64n256k16. So an expert of up to 192 rows reads its gate and up weights from the L2
        // once, where 128-row units read them twice past 128 rows (at batch 128 about half the
        // experts: 128 rows on average, give or take a few dozen), and the SM takes 56 KB a stage
        // for 192 rows' products instead of 48 KB for 128's. The third accumulator needs
        // setmaxnreg: 192 registers of sums a thread.
        for (int u = next_unit(); u < units; u = next_unit()) {
            const int item = u / tiles, n0 = (u % tiles) * COLS;
            // The unit's rows: the item's, or (192-row units) with the next item's merged in.
            const int unit_rows = ws_rows<H>(p, item);
            const int s0 = p.items[3 * item + 1] + 64 * g, rows = unit_rows - 64 * g;
            // Whether this warpgroup has rows of the item (uniform: see the vote below).
            const bool live = __all_sync(0xffffffffu, rows > 0);
            float lo[64], hi[64], wt[1][2];
            load_row_weights<1, GATED>(p, s0, rows, wt);
#pragma unroll
            for (int i = 0; i < 64; i++) lo[i] = hi[i] = 0.f;
            // The rows past 128 (H == 3; uniform over the CTA: the unit's).
            const int sx = p.items[3 * item + 1] + 128, rx = unit_rows - 128;
            const bool live_x = H == 3 && rx > 0;
            float ex[64], wx[1][2];
            if constexpr (H == 3) {
                load_row_weights<1, GATED>(p, sx, rx, wx);
#pragma unroll
                for (int i = 0; i < 64; i++) ex[i] = 0.f;
            }
            // The unit's k-steps, with the rows past 128 (WITH_X) or without: two loops, each
            // with no branch between its wgmmas (a branch there made ptxas wait after each).
            auto k_steps = [&](auto with_x) {
                for (int kt = 0; kt < ktiles; kt++, it++) {
                    const int s = it % ST;
                    mbar_wait(&full[s], (it / ST) & 1);  // at kt = 0 waited already (above): no wait
                    if (live) {
                        fence_proxy_async();  // the x tile's cp.async writes, seen by the wgmmas below
                        const unsigned char* X = base + s * STAGE;
                        const uint64_t da = sw128_desc(X + g * 64 * 128), db = sw128_desc(X + XB);
                        wgmma_fence();
#pragma unroll
                        for (int kk = 0; kk < BK / 16; kk++) wgmma_m64n256k16_bf16(lo, hi, da + 2 * kk, db + 2 * kk);
                        if constexpr (decltype(with_x)::value) {
                            const uint64_t dx = sw128_desc(X + 128 * 128), dbx = sw128_desc(X + XB + g * MOE_MMA_WROWS * 128);
#pragma unroll
                            for (int kk = 0; kk < BK / 16; kk++) wgmma_m64n128k16_bf16(ex, dx + 2 * kk, dbx + 2 * kk);
                        }
                        wgmma_commit();
                        wgmma_wait<0>();
                    }
                    mbar_arrive(&empty[s]);  // a warpgroup with no rows frees the stage at once
                }
            };
            if (live_x) {
                if constexpr (H == 3) k_steps(std::true_type{});
            } else {
                k_steps(std::false_type{});
            }
            if (live) {
                wgmma_reg_fence(lo);
                wgmma_reg_fence(hi);
                store_warpgroup_rows<1, GATED>(p, reinterpret_cast<const float(&)[1][64]>(lo), wt, s0, rows, n0);
                store_warpgroup_rows<1, GATED>(p, reinterpret_cast<const float(&)[1][64]>(hi), wt, s0, rows, n0 + WG_COLS);
            }
            if constexpr (H == 3) {
                if (live_x) {
                    wgmma_reg_fence(ex);
                    store_warpgroup_rows<1, GATED>(p, reinterpret_cast<const float(&)[1][64]>(ex), wx, sx, rx, n0 + g * WG_COLS);
                }
            }
            // A merged unit is done for both of its items (down waits for each by its own).
            if constexpr (GATED) ws_unit_done(p, item, g, H == 3 && unit_rows > p.items[3 * item + 2]);
        }
    } else {
        // 64-row items: each warpgroup the item's rows by its MOE_MMA_WROWS weight rows.
        static_assert(H == 1, "128-row items take the branch above");
        for (int u = next_unit(); u < units; u = next_unit()) {
            const int item = u / tiles, n0 = (u % tiles) * COLS;
            const int s0 = p.items[3 * item + 1], rows = p.items[3 * item + 2];
            float d[H][64], wt[H][2];
            load_row_weights<H, GATED>(p, s0, rows, wt);
#pragma unroll
            for (int h = 0; h < H; h++)
#pragma unroll
                for (int i = 0; i < 64; i++) d[h][i] = 0.f;
            for (int kt = 0; kt < ktiles; kt++, it++) {
                const int s = it % ST;
                mbar_wait(&full[s], (it / ST) & 1);  // at kt = 0 waited already (above): no wait
                fence_proxy_async();  // the x tile's cp.async writes, seen by the wgmmas below
                const unsigned char* X = base + s * STAGE;
                const uint64_t da = sw128_desc(X), db = sw128_desc(X + XB + g * MOE_MMA_WROWS * 128);
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < BK / 16; kk++) wgmma_m64n128k16_bf16(d[0], da + 2 * kk, db + 2 * kk);
                wgmma_commit();
                wgmma_wait<0>();  // this step's wgmmas are done: free its stage (the other
                mbar_arrive(&empty[s]);  // warpgroup's keep the tensor cores busy meanwhile)
            }
#pragma unroll
            for (int h = 0; h < H; h++) wgmma_reg_fence(d[h]);
            store_warpgroup_rows<H, GATED>(p, d, wt, s0, rows, n0 + g * WG_COLS);
            if constexpr (GATED) ws_unit_done(p, item, g);
        }
    }
}
#endif

template <int BM, bool GATED>
__device__ __forceinline__ void moe_gemm_bf16(const MoeGemmParams& p) {
    // Programmatic dependent launch (CudaOptions::expert_pdl; kernels.rs, launch_dependent).
    // gate_up, moe_permute's dependent (moe.rs says when), reads the work list only after
    // moe_permute's end, and releases its down only then: down reads the items, the routing
    // weights and its weights before its own wait (moe_gemm_wgmma), so the permute must have
    // ended before any down CTA starts. (Launched plainly, the wait returns at once.)
    if constexpr (GATED) {
        pdl_wait();
        pdl_release();
    }
    const TileItem it = tile_item(p);
    if (!it.live) return;
    const int n0 = blockIdx.x * (GATED ? MOE_MMA_GATE_UP_COLS : MOE_MMA_DOWN_COLS);
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    moe_gemm_wgmma<BM, GATED>(p, it, n0);
    if constexpr (GATED) item_done_signal(p, it);
#else
    // 128-row items are launched only where wgmma is (CudaBackend::tile_rows).
    if constexpr (BM == MOE_BM_LARGE) {
        moe_gemm_mma<BM, GATED>(p, it.e, it.s0, it.rows, n0);
    } else {
        __trap();
    }
#endif
}

// The e4m3 code rows a thread of the fp8 wgmma tiles copies: the CTA's MOE_MMA_WROWS weight rows
// (gated: the gate's rows n0.., then the up's same rows) by KW codes a stage, 16 a copy; thread
// tid takes the 16 codes from column 16 (tid % (KW / 16)) of rows tid / (KW / 16) + ROWS_PER_PASS
// i. Rows past n have no source (zero-filled).
template <int KW, bool GATED>
struct CodeRows {
    static constexpr int PER_ROW = KW / 16;
    static constexpr int ROWS_PER_PASS = MOE_WG_THREADS / PER_ROW;
    static constexpr int CH = MOE_MMA_WROWS / ROWS_PER_PASS;
    int qc, qr0;
    const uint8_t* src[CH];
    __device__ __forceinline__ CodeRows(const MoeGemmParams& p, int e, int n0, int tid = threadIdx.x) {
        constexpr int WR = MOE_MMA_WROWS;
        qc = (tid % PER_ROW) * 16;
        qr0 = tid / PER_ROW;
#pragma unroll
        for (int i = 0; i < CH; i++) {
            const int r = qr0 + i * ROWS_PER_PASS;
            const int n = GATED ? n0 + r % (WR / 2) : n0 + r;
            const uint8_t* m = GATED && r >= WR / 2 ? p.w2_fp8 : p.w1_fp8;
            src[i] = n < p.n ? m + (size_t)e * p.n * p.k + (size_t)n * p.k : nullptr;
        }
    }
    // The stage at k0 into Q, code rows `ld` bytes apart (k is a multiple of 16, CudaBackend
    // checks: a copy lies wholly inside k or past it).
    __device__ __forceinline__ void copy(unsigned char* Q, int ld, int k0, const MoeGemmParams& p) const {
#pragma unroll
        for (int i = 0; i < CH; i++) {
            const bool ok = k0 + qc < p.k && src[i];
            cp_async16(Q + (qr0 + i * ROWS_PER_PASS) * ld + qc, ok ? src[i] + k0 + qc : p.w1_fp8, ok);
        }
    }
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The fp8 tiles on wgmma. A stage brings the item's x tile (bf16, swizzled, as in the bf16
// tiles) and the CTA's 128 weight rows as e4m3 codes ([128][GEMM_BK] bytes, unswizzled); the
// threads widen the codes to bf16 (exact) into one swizzled tile the warpgroup multiplies. Each
// 128-column k-block of the weights has its own scale (per 128 weight rows; gated: the gate's
// and the up's), so a k-block's products go to their own accumulators (blk), which are scaled
// into the sums (acc) when the block ends: sum over blocks of scale * (x . e4m3), the WMMA
// version's math. Two barriers a k-step (codes landed; widened tile written).
template <bool GATED>
__device__ __forceinline__ void moe_gemm_wgmma_fp8(const MoeGemmParams& p, int e, int s0, int rows, int n0) {
    constexpr int BK = GEMM_BK, ST = MOE_MMA_STAGES, WR = MOE_MMA_WROWS;
    constexpr int WIDE_CH = WR * (BK / 8) / MOE_WG_THREADS;   // 8-code chunks a thread widens a stage
    using T = TileSources<MOE_BM_LARGE>;
    const int tid = threadIdx.x, warp = tid / WARP, lane = tid % WARP;
    extern __shared__ __align__(1024) unsigned char raw[];
    unsigned char* base = raw + ((1024 - ((uint32_t)__cvta_generic_to_shared(raw) & 1023)) & 1023);
    // [the widened weight tile][stage 0: x tile, codes][stage 1] ...
    unsigned char* wide = base;
    auto xs = [&](int buf) { return base + moe_wgmma_fp8_wide_bytes() + buf * moe_wgmma_fp8_stage_bytes(); };
    auto qs = [&](int buf) { return xs(buf) + moe_wgmma_x_bytes(MOE_BM_LARGE); };
    const T src = T::template make<GATED>(p, e, s0, rows, n0);
    const CodeRows<BK, GATED> codes(p, e, n0);
    auto load = [&](int buf, int k0) {
        src.copy_x(xs(buf), k0, p, swizzled_at);
        codes.copy(qs(buf), BK, k0, p);
    };
    // This CTA's row of scale blocks of expert e: [ceil(n/128)][ceil(k/128)] per expert.
    const int scols = (p.k + FP8_BLOCK - 1) / FP8_BLOCK;
    const size_t srow = ((size_t)e * ((p.n + FP8_BLOCK - 1) / FP8_BLOCK) + n0 / FP8_BLOCK) * scols;
    float acc[64], blk[64];
#pragma unroll
    for (int i = 0; i < 64; i++) acc[i] = blk[i] = 0.f;
    const int ktiles = (p.k + BK - 1) / BK;
    // The first barrier of a step also tells that the widened tile's last reader (step kt - 1's
    // wgmmas, waited for) is done; the widening writes it through the generic proxy, so the
    // step makes it visible to the wgmmas itself.
    tile_pipeline<ST, false>(ktiles, load, [&](int buf, int kt) {
        const unsigned char* Q = qs(buf);
#pragma unroll
        for (int i = 0; i < WIDE_CH; i++) {
            const int c = tid + i * MOE_WG_THREADS, r = c / (BK / 8), c8 = c % (BK / 8);
            *reinterpret_cast<uint4*>(wide + sw128_offset(r, c8)) = fp8x8_to_bf16x8(*reinterpret_cast<const uint2*>(Q + r * BK + c8 * 8));
        }
        fence_proxy_async();
        __syncthreads();  // the widened tile (and stage kt's x) visible to the wgmmas
        const uint64_t da = sw128_desc(xs(buf)), db = sw128_desc(wide);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) wgmma_m64n128k16_bf16(blk, da + 2 * kk, db + 2 * kk);
        wgmma_commit();
        wgmma_wait<0>();
        // The k-block ends with this stage (or the weights do): scale it into the sums.
        if ((kt + 1) * BK % FP8_BLOCK == 0 || kt + 1 == ktiles) {
            const int sb = kt * BK / FP8_BLOCK;
            const float s1 = p.w1_scale[srow + sb], s2 = GATED ? p.w2_scale[srow + sb] : s1;
#pragma unroll
            for (int i = 0; i < 64; i++) {
                acc[i] += (GATED && i >= 32 ? s2 : s1) * blk[i];
                blk[i] = 0.f;
            }
        }
    });
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int r = warp * 16 + lane / 4 + 8 * h;
        if (r >= rows) continue;
        const float wt = slot_weight_of<GATED>(p, s0 + r);
#pragma unroll
        for (int j = 0; j < (GATED ? 8 : 16); j++) {
            const int col = n0 + j * 8 + (lane % 4) * 2;
            const float* up = GATED ? &acc[4 * (j + 8)] : &acc[4 * j];
            store_pair<GATED>(p, s0 + r, col, acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1], up[2 * h], up[2 * h + 1], wt);
        }
    }
}
#endif

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The fp8 tiles with the codes as wgmma's A operand from registers
// (CudaOptions::fp8_codes_in_registers). The CTA's 128 weight rows are D's rows and the item's x
// rows its columns (D = W x^T: a m64n64k16 takes 64 weight rows by the item's 64 rows), so each
// thread widens the codes of its own A fragments straight from the stage: no widened tile in shared
// memory, no second barrier a step. A stage is one whole scale block of k (FP8_BLOCK: x as two
// swizzled 64-column panels, the codes in padded rows), so that a step's fixed costs (its barrier,
// the wgmma wait) come once a block, where the widening tiles above pay them twice for half the
// bytes. A block's products go to their own accumulators (blk: scale-d off at its first k16),
// scaled into the sums (acc) after the wait: sum over blocks of scale * (x . e4m3), as the widening
// tiles. Tile t of the weight rows: gated, t = 0 the gate's rows n0.., t = 1 the up's same rows (a
// thread then holds the gate and up sums of the same outputs); down, rows n0 + 64t... Down is
// gate_up's programmatic dependent and waits for its own item's gate_up CTAs, as the bf16 tiles'
// (CudaOptions::item_wait).
template <bool GATED>
__device__ __forceinline__ void moe_gemm_wgmma_fp8_ra(const MoeGemmParams& p, const TileItem& it, int n0) {
    const int e = it.e, s0 = it.s0, rows = it.rows;
    constexpr int KB = FP8_BLOCK, ST = FP8_RA_STAGES, WR = MOE_MMA_WROWS, LD = FP8_RA_CODE_LD, KK = KB / 16;
    constexpr int PANELS = KB / GEMM_BK;                      // x's 64-column panels a stage
    constexpr int PANEL_BYTES = moe_wgmma_x_bytes(MOE_BM_LARGE);
    static_assert(WR == 128 && MOE_WG_THREADS == 128, "two 64-row A tiles, one warpgroup");
    using T = TileSources<MOE_BM_LARGE>;
    const int tid = threadIdx.x, warp = tid / WARP, lane = tid % WARP, g = lane / 4, q = lane % 4;
    extern __shared__ __align__(1024) unsigned char raw[];
    unsigned char* base = raw + ((1024 - ((uint32_t)__cvta_generic_to_shared(raw) & 1023)) & 1023);
    auto xs = [&](int buf) { return base + buf * moe_fp8_ra_stage_bytes(); };
    auto qs = [&](int buf) { return xs(buf) + moe_fp8_ra_x_bytes(); };
    const T src = T::template make<GATED>(p, e, s0, rows, n0);
    const CodeRows<KB, GATED> codes(p, e, n0);
    auto load = [&](int buf, int k0) {
#pragma unroll
        for (int h = 0; h < PANELS; h++) src.copy_x(xs(buf) + h * PANEL_BYTES, k0 + h * GEMM_BK, p, swizzled_at);
        codes.copy(qs(buf), LD, k0, p);
    };
    // This CTA's row of scale blocks of expert e: [ceil(n/128)][ceil(k/128)] per expert (gated:
    // the gate's n0.. and the up's, in their own scales).
    const int scols = (p.k + KB - 1) / KB;
    const size_t srow = ((size_t)e * ((p.n + KB - 1) / KB) + n0 / KB) * scols;
    const int ktiles = scols;
    float acc[2][32], blk[2][32];
#pragma unroll
    for (int t = 0; t < 2; t++)
#pragma unroll
        for (int i = 0; i < 32; i++) acc[t][i] = blk[t][i] = 0.f;
    // A fragment (tile t, k16 kk) of this thread: rows 64t + 16 warp + g (+8), codes 16kk + 2q
    // (+1) and + 8 (mma.m16n8k16's A layout, which a register A of wgmma takes a warp).
    const int a_off = (16 * warp + g) * LD + 2 * q;
    // Down, gate_up's programmatic dependent, asks for its first stages' codes before it waits
    // for its item's act rows (item_done_wait), as moe_gemm_wgmma's down does; gate_up copies
    // both at once. (The first commit group holds all of those codes: the waits stay conservative.)
    if constexpr (!GATED) {
#pragma unroll
        for (int s = 0; s < ST - 1; s++)
            if (s < ktiles) codes.copy(qs(s), LD, s * KB, p);
        item_done_wait(p, it);
    }
    // The first stages: down's codes are already asked for.
    auto first = [&](int buf, int k0) {
#pragma unroll
        for (int h = 0; h < PANELS; h++) src.copy_x(xs(buf) + h * PANEL_BYTES, k0 + h * GEMM_BK, p, swizzled_at);
        if constexpr (GATED) codes.copy(qs(buf), LD, k0, p);
    };
    tile_pipeline<ST, true, KB>(ktiles, first, load, [&](int buf, int kt) {
        // The block's scales first, so that their latency passes under the widening and products.
        const float s1 = p.w1_scale[srow + kt], s2 = GATED ? p.w2_scale[srow + kt] : s1;
        const unsigned char* X = xs(buf);
        const unsigned char* Q = qs(buf) + a_off;
        uint32_t a[2][KK][4];
#pragma unroll
        for (int t = 0; t < 2; t++)
#pragma unroll
            for (int kk = 0; kk < KK; kk++) {
                const unsigned char* c = Q + 64 * t * LD + 16 * kk;
                a[t][kk][0] = fp8x2_to_bf16x2(*reinterpret_cast<const uint16_t*>(c));
                a[t][kk][1] = fp8x2_to_bf16x2(*reinterpret_cast<const uint16_t*>(c + 8 * LD));
                a[t][kk][2] = fp8x2_to_bf16x2(*reinterpret_cast<const uint16_t*>(c + 8));
                a[t][kk][3] = fp8x2_to_bf16x2(*reinterpret_cast<const uint16_t*>(c + 8 * LD + 8));
            }
        wgmma_fence();
#pragma unroll
        for (int t = 0; t < 2; t++)
#pragma unroll
            for (int kk = 0; kk < KK; kk++)
                wgmma_m64n64k16_bf16_rs(blk[t], a[t][kk], sw128_desc(X + (kk / 4) * PANEL_BYTES) + 2 * (kk % 4), kk > 0);
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_reg_fence(blk[0]);
        wgmma_reg_fence(blk[1]);
        wgmma_reg_fence_a(a[0]);
        wgmma_reg_fence_a(a[1]);
#pragma unroll
        for (int i = 0; i < 32; i++) {
            acc[0][i] += s1 * blk[0][i];
            acc[1][i] += s2 * blk[1][i];
        }
    });
    // d[4j + i]: weight row 16 warp + g (+8 for i >= 2) of the tile, x row 8j + 2q + i % 2.
    float wts[8][2] = {};
    if constexpr (!GATED) load_n_row_weights(p, s0, rows, wts);
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int b = 0; b < 2; b++) {
            const int c = 8 * j + 2 * q + b;
            if (c >= rows) continue;
            const size_t slot = s0 + c;
            const float wt = GATED ? 0.f : wts[j][b];
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int r = 16 * warp + g + 8 * h, i = 4 * j + 2 * h + b;
                if constexpr (GATED) {
                    if (n0 + r < p.n) p.act_out[slot * p.n + n0 + r] = f2bf(silu_f(acc[0][i]) * acc[1][i]);
                } else {
#pragma unroll
                    for (int t = 0; t < 2; t++)
                        if (n0 + 64 * t + r < p.n) p.slot_out[slot * p.n + n0 + 64 * t + r] = f2bf(acc[t][i] * wt);
                }
            }
        }
}
#endif

// fp8 experts: wgmma on sm_90a (the codes widened per stage), the WMMA tiles elsewhere (whose
// CTAs take GEMM_BN output columns; the host launches each path's grid).
template <bool GATED>
__device__ __forceinline__ void moe_gemm_fp8_tiles(const MoeGemmParams& p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    const TileItem it = tile_item(p);
    if (!it.live) return;
    moe_gemm_wgmma_fp8<GATED>(p, it.e, it.s0, it.rows, blockIdx.x * (GATED ? MOE_MMA_GATE_UP_COLS : MOE_MMA_DOWN_COLS));
#else
    moe_gemm<MOE_BM_LARGE, GATED, true>(p);
#endif
}

extern "C" __global__ void __launch_bounds__(MOE_TILES_THREADS, 3) moe_gate_up_m64(const MoeGemmParams p) { moe_gemm_bf16<MOE_BM_LARGE, true>(p); }
extern "C" __global__ void __launch_bounds__(MOE_TILES_THREADS, 3) moe_down_m64(const MoeGemmParams p) { moe_gemm_bf16<MOE_BM_LARGE, false>(p); }
extern "C" __global__ void __launch_bounds__(MOE_TILES_THREADS, 2) moe_gate_up_m128(const MoeGemmParams p) { moe_gemm_bf16<MOE_BM_XLARGE, true>(p); }
extern "C" __global__ void __launch_bounds__(MOE_TILES_THREADS, 2) moe_down_m128(const MoeGemmParams p) { moe_gemm_bf16<MOE_BM_XLARGE, false>(p); }
// The warp-specialized tiles: sm_90a only (CudaBackend launches them where wgmma is).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MOE_WS_BODY(BM, GATED) moe_gemm_ws<BM, GATED>(p)
#else
#define MOE_WS_BODY(BM, GATED) __trap()
#endif
extern "C" __global__ void __launch_bounds__(MOE_WS_THREADS, 1) moe_gate_up_m64_ws(const MoeGemmParams p) { MOE_WS_BODY(MOE_BM_LARGE, true); }
extern "C" __global__ void __launch_bounds__(MOE_WS_THREADS, 1) moe_down_m64_ws(const MoeGemmParams p) { MOE_WS_BODY(MOE_BM_LARGE, false); }
extern "C" __global__ void __launch_bounds__(MOE_WS_THREADS, 1) moe_gate_up_m128_ws(const MoeGemmParams p) { MOE_WS_BODY(MOE_BM_XLARGE, true); }
extern "C" __global__ void __launch_bounds__(MOE_WS_THREADS, 1) moe_down_m128_ws(const MoeGemmParams p) { MOE_WS_BODY(MOE_BM_XLARGE, false); }
extern "C" __global__ void __launch_bounds__(MOE_WS_THREADS, 1) moe_gate_up_m192_ws(const MoeGemmParams p) { MOE_WS_BODY(MOE_BM_XXLARGE, true); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) moe_gate_up_m64_fp8(const MoeGemmParams p) { moe_gemm_fp8_tiles<true>(p); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) moe_down_m64_fp8(const MoeGemmParams p) { moe_gemm_fp8_tiles<false>(p); }
// The fp8 tiles with the codes in registers: sm_90a only (CudaBackend launches them where wgmma
// is).
template <bool GATED>
__device__ __forceinline__ void moe_gemm_fp8_ra_tiles(const MoeGemmParams& p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    // As moe_gemm_bf16: gate_up (maybe moe_permute's dependent) waits before it reads the work
    // list and then lets its down start CTAs, which wait for their own item's gate_up CTAs.
    if constexpr (GATED) {
        pdl_wait();
        pdl_release();
    }
    const TileItem it = tile_item(p);
    if (!it.live) return;
    moe_gemm_wgmma_fp8_ra<GATED>(p, it, blockIdx.x * (GATED ? MOE_MMA_GATE_UP_COLS : MOE_MMA_DOWN_COLS));
    if constexpr (GATED) item_done_signal(p, it);
#else
    __trap();
#endif
}
extern "C" __global__ void __launch_bounds__(MOE_TILES_THREADS, 2) moe_gate_up_m64_fp8_ra(const MoeGemmParams p) { moe_gemm_fp8_ra_tiles<true>(p); }
extern "C" __global__ void __launch_bounds__(MOE_TILES_THREADS, 2) moe_down_m64_fp8_ra(const MoeGemmParams p) { moe_gemm_fp8_ra_tiles<false>(p); }

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The W8A8 tiles (CudaOptions::fp8_activations): x's e4m3 codes (quantize_rows_fp8: one scale a
// row and 128 columns) by the experts' codes on fp8 wgmma, both operands straight from the
// swizzled stage, so nothing is widened. Laid out as moe_gemm_wgmma's 64-row tiles (x rows are D's
// rows, the CTA's 128 weight rows its columns: gated, the gate's n0.. then the up's), with a stage
// one whole scale block of k (FP8_BLOCK codes, a 128-byte row as a bf16 stage's). A block's
// products go to their own accumulators (blk: scale-d off at its first k32), added into the sums
// after the wait times x's row scale and the weights' block scale: sum over blocks of
// sx * sw * (qx . qw), what the CPU twin's dequantized x . dequantized w is (src/fp8.rs).
template <bool GATED>
__device__ __forceinline__ void moe_gemm_wgmma_w8a8(const MoeGemmParams& p, const TileItem& it, int n0) {
    const int e = it.e, s0 = it.s0, rows = it.rows;
    constexpr int KB = FP8_BLOCK, ST = W8A8_STAGES;
    using T = TileSources<MOE_BM_LARGE, uint8_t>;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    extern __shared__ __align__(1024) unsigned char raw[];
    unsigned char* base = raw + ((1024 - ((uint32_t)__cvta_generic_to_shared(raw) & 1023)) & 1023);
    auto xs = [&](int buf) { return base + buf * moe_w8a8_stage_bytes(); };
    auto ws = [&](int buf) { return xs(buf) + moe_w8a8_x_bytes(); };
    const T src = T::template make<GATED>(p, e, s0, rows, n0);
    auto load = [&](int buf, int k0) {
        src.copy_x(xs(buf), k0, p, swizzled_at);
        src.copy_w(ws(buf), k0, p, swizzled_at);
    };
    const int ktiles = (p.k + KB - 1) / KB;
    // This CTA's row of the weights' scale blocks ([ceil(n/128)][ceil(k/128)] an expert; gated,
    // the gate's and the up's), and the scale rows of this thread's two x rows (16 warp + g, + 8;
    // none past the item).
    const size_t srow = ((size_t)e * ((p.n + KB - 1) / KB) + n0 / KB) * ktiles;
    const float* sx[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int r = warp * 16 + lane / 4 + 8 * i;
        sx[i] = r < rows ? p.x_scale + (size_t)(GATED ? p.slot_token[s0 + r] : s0 + r) * ktiles : nullptr;
    }
    float acc[1][64], blk[64], wt[1][2];
    load_row_weights<1, GATED>(p, s0, rows, wt);
#pragma unroll
    for (int i = 0; i < 64; i++) acc[0][i] = 0.f;
    tile_pipeline<ST, true, KB>(ktiles, load, [&](int buf, int kt) {
        // The block's scales, asked for before its products so that their latency passes under them.
        const float w1s = p.w1_scale[srow + kt], w2s = GATED ? p.w2_scale[srow + kt] : w1s;
        const float x0 = sx[0] ? sx[0][kt] : 0.f, x1 = sx[1] ? sx[1][kt] : 0.f;
        const uint64_t da = sw128_desc(xs(buf)), db = sw128_desc(ws(buf));
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < KB / 32; kk++) wgmma_m64n128k32_e4m3(blk, da + 2 * kk, db + 2 * kk, kk > 0);
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_reg_fence(blk);
        // blk[4j + i]: row 16 warp + g (+8 for i >= 2), column 8j + 2q + i % 2 (gated: j >= 8 the up's).
        const float f[2][2] = {{x0 * w1s, x1 * w1s}, {x0 * w2s, x1 * w2s}};
#pragma unroll
        for (int i = 0; i < 64; i++) acc[0][i] += f[GATED && i >= 32][(i % 4) / 2] * blk[i];
    });
    store_warpgroup_rows<1, GATED>(p, acc, wt, s0, rows, n0);
}
#endif

// The W8A8 tiles' kernels: launched plainly (their x codes come from quantize_rows_fp8, launched
// between gate_up and down).
template <bool GATED>
__device__ __forceinline__ void moe_gemm_w8a8_tiles(const MoeGemmParams& p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    const TileItem it = tile_item(p);
    if (!it.live) return;
    moe_gemm_wgmma_w8a8<GATED>(p, it, blockIdx.x * (GATED ? MOE_MMA_GATE_UP_COLS : MOE_MMA_DOWN_COLS));
#else
    __trap();
#endif
}
extern "C" __global__ void __launch_bounds__(MOE_TILES_THREADS, 2) moe_gate_up_m64_w8a8(const MoeGemmParams p) { moe_gemm_w8a8_tiles<true>(p); }
extern "C" __global__ void __launch_bounds__(MOE_TILES_THREADS, 2) moe_down_m64_w8a8(const MoeGemmParams p) { moe_gemm_w8a8_tiles<false>(p); }
