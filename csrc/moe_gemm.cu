// The routed experts as grouped GEMMs over only the experts that got tokens.
// Grid: (n / GEMM_BN tiles, work items). A work item is (expert, first sorted slot, rows <= BM),
// written by moe_permute; CTAs past the item count exit at once. Each CTA streams a GEMM_BN x k
// slice of the expert's weights through shared memory (cp.async, 16-byte, double-buffered)
// and multiplies the item's gathered rows by it with bf16 WMMA (fp32 accumulate).
//   moe_gate_up: act[slot] = bf16(silu(x w_gate^T) * (x w_up^T)), x = h[slot_token[slot]]
//   moe_down:    out[slot] = slot_weight[slot] * (act[slot] w_down^T)            (f32)
// These are the 64-row items (batches whose experts average 12 rows or more); items of a few
// rows go to the weight stream of moe_stream.cu. See docs/PERF.md for what binds here.
// FP8 (W8A16, the `_fp8` kernels): the weights stream as e4m3 (half the bytes), are widened to
// bf16 in shared memory (exact: e4m3 fits in bf16) and multiplied unscaled; each stage's product
// goes into its own accumulator, which is scaled by the tile's block scale (a stage's 64x64 tile
// lies in one 128x128 scale block) and added in f32. So the sum is sum(x * e4m3) * scale_inv per
// block, the CPU twin's x * (e4m3 * scale_inv) up to f32 rounding.
#include "common.cuh"
#include "cp_async.cuh"
#include <cuda_fp8.h>
#include <mma.h>
using namespace nvcuda;

// Dynamic shared memory: params.h's moe_gemm(_fp8)_stage_bytes / moe_gemm(_fp8)_smem_bytes (the
// host launches with the same values).
template <int BM, bool GATED, bool FP8>
struct Smem {
    static constexpr int stage = FP8 ? moe_gemm_fp8_stage_bytes(BM, GATED) : moe_gemm_stage_bytes(BM, GATED);
    static constexpr int bytes = FP8 ? moe_gemm_fp8_smem_bytes(BM, GATED) : moe_gemm_smem_bytes(BM, GATED);
};

// 8 e4m3 codes -> 8 bf16 (exact).
__device__ __forceinline__ uint4 fp8x8_to_bf16x8(uint2 v) {
    uint4 out;
    uint32_t* o = reinterpret_cast<uint32_t*>(&out);
    const uint32_t in[2] = {v.x, v.y};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const __nv_fp8x2_storage_t pair = (__nv_fp8x2_storage_t)((in[i / 2] >> (16 * (i % 2))) & 0xFFFF);
        const float2 f = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3)));
        const __nv_bfloat162 b = __floats2bfloat162_rn(f.x, f.y);
        o[i] = *reinterpret_cast<const uint32_t*>(&b);
    }
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

    extern __shared__ __align__(128) unsigned char raw[];
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
            p.f32_out[slot * p.n + n0 + c] = o1[r * (GEMM_BN + 4) + c] * p.slot_weight[slot];
        }
    }
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS) moe_gate_up_m64(const MoeGemmParams p) { moe_gemm<MOE_BM_LARGE, true, false>(p); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) moe_down_m64(const MoeGemmParams p) { moe_gemm<MOE_BM_LARGE, false, false>(p); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) moe_gate_up_m64_fp8(const MoeGemmParams p) { moe_gemm<MOE_BM_LARGE, true, true>(p); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) moe_down_m64_fp8(const MoeGemmParams p) { moe_gemm<MOE_BM_LARGE, false, true>(p); }
