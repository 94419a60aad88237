// The routed experts as grouped GEMMs over only the experts that got tokens.
// Grid: (n / GEMM_BN tiles, work items). A work item is (expert, first sorted slot, rows <= BM),
// written by moe_permute; CTAs past the item count exit at once. Each CTA streams a GEMM_BN x k
// slice of the expert's weights through shared memory (cp.async, 16-byte, double-buffered)
// and multiplies the item's gathered rows by it with bf16 WMMA (fp32 accumulate).
//   moe_gate_up: act[slot] = bf16(silu(x w_gate^T) * (x w_up^T)), x = h[slot_token[slot]]
//   moe_down:    out[slot] = slot_weight[slot] * (act[slot] w_down^T)            (f32)
// At batch 1 a step has ~1-3 rows per expert, so this is a weight stream: its speed is
// the bytes in flight per SM (stages x CTAs per SM), not the tensor cores. See docs/PERF.md
// for what would make it faster.
#include "common.cuh"
#include "cp_async.cuh"
#include <mma.h>
using namespace nvcuda;

// Dynamic shared memory: params.h's moe_gemm_stage_bytes / moe_gemm_smem_bytes (the host
// launches with the same values).
template <int BM, bool GATED>
struct Smem {
    static constexpr int stage = moe_gemm_stage_bytes(BM, GATED);
    static constexpr int bytes = moe_gemm_smem_bytes(BM, GATED);
};

// BM rows per work item: 16 when experts get a few rows each (small batches: the kernel is a
// weight stream), 64 when they get tens (large batches: one item per expert reads its weights
// once instead of once per 16 rows). Warp w owns output columns 16w..16w+15 for all BM rows.
template <int BM, bool GATED>
__device__ __forceinline__ void moe_gemm(const MoeGemmParams& p) {
    constexpr int MF = BM / 16;                   // row fragments per warp
    constexpr int XCH = BM * (GEMM_BK / 8) / GEMM_THREADS;  // 16-byte x chunks per thread per stage
    int item = blockIdx.y;
    if (item >= *p.num_items) return;
    int e = p.items[3 * item], s0 = p.items[3 * item + 1], rows = p.items[3 * item + 2];
    int n0 = blockIdx.x * GEMM_BN, tid = threadIdx.x, warp = tid / WARP;
    const size_t wstride = (size_t)p.n * p.k;
    const bf16* w1 = p.w1 + e * wstride;
    const bf16* w2 = GATED ? p.w2 + e * wstride : nullptr;

    extern __shared__ __align__(128) unsigned char raw[];
    auto xs = [&](int buf) { return reinterpret_cast<bf16*>(raw + buf * Smem<BM, GATED>::stage); };
    auto w1s = [&](int buf) { return xs(buf) + BM * GEMM_LDS; };
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
        cp_async_commit();
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
                wmma::mma_sync(acc1[m], a, b1, acc1[m]);
                if (GATED) wmma::mma_sync(acc2[m], a, b2, acc2[m]);
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

extern "C" __global__ void __launch_bounds__(GEMM_THREADS) moe_gate_up(const MoeGemmParams p) { moe_gemm<MOE_BM_SMALL, true>(p); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) moe_down(const MoeGemmParams p) { moe_gemm<MOE_BM_SMALL, false>(p); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) moe_gate_up_m64(const MoeGemmParams p) { moe_gemm<MOE_BM_LARGE, true>(p); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) moe_down_m64(const MoeGemmParams p) { moe_gemm<MOE_BM_LARGE, false>(p); }
