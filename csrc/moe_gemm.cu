// The routed experts as grouped GEMMs over only the experts that got tokens.
// Grid: (n / BN tiles, work items). A work item is (expert, first sorted slot, rows <= BM),
// written by moe_permute; CTAs past the item count exit at once. Each CTA streams a BN x k
// slice of the expert's weights through shared memory (cp.async, 16-byte, double-buffered)
// and multiplies the item's gathered rows by it with bf16 WMMA (fp32 accumulate).
//   moe_gate_up: act[slot] = bf16(silu(x w_gate^T) * (x w_up^T)), x = h[slot_token[slot]]
//   moe_down:    out[slot] = slot_weight[slot] * (act[slot] w_down^T)            (f32)
// At batch 1 a step has ~1-3 rows per expert, so this is a weight stream: its speed is
// the bytes in flight per SM (stages x CTAs per SM), not the tensor cores. See docs/PERF.md
// for what would make it faster.
#include "common.cuh"
#include <mma.h>
using namespace nvcuda;

#define BM 16
#define BN 64
#define BK 64
#define LDS (BK + 8)  // padded row (bf16 elements) to spread shared-memory banks
#define GEMM_THREADS 128

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    int sz = pred ? 16 : 0;  // 0: zero-fill, nothing read
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(sz));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

template <bool GATED>
struct Stage {
    bf16 x[BM * LDS];
    bf16 w1[BN * LDS];
    bf16 w2[GATED ? BN * LDS : 8];
};

template <bool GATED>
__device__ __forceinline__ void moe_gemm(const MoeGemmParams& p) {
    int item = blockIdx.y;
    if (item >= *p.num_items) return;
    int e = p.items[3 * item], s0 = p.items[3 * item + 1], rows = p.items[3 * item + 2];
    int n0 = blockIdx.x * BN, tid = threadIdx.x, warp = tid / WARP;
    const size_t wstride = (size_t)p.n * p.k;
    const bf16* w1 = p.w1 + e * wstride;
    const bf16* w2 = GATED ? p.w2 + e * wstride : nullptr;

    __shared__ __align__(128) unsigned char raw[2 * sizeof(Stage<GATED>)];
    Stage<GATED>* st = reinterpret_cast<Stage<GATED>*>(raw);

    // X: 16 rows x 8 chunks of 8 bf16 = 128 chunks, one per thread.
    int xr = tid / (BK / 8), xc = (tid % (BK / 8)) * 8;
    const bf16* xsrc = p.x;
    bool xok = xr < rows;
    if (xok) {
        int slot = s0 + xr;
        xsrc = p.x + (size_t)(GATED ? p.slot_token[slot] : slot) * p.k;
    }
    auto load = [&](int buf, int k0) {
        Stage<GATED>& S = st[buf];
        cp_async16(&S.x[xr * LDS + xc], xok && k0 + xc < p.k ? xsrc + k0 + xc : p.x, xok && k0 + xc < p.k);
#pragma unroll
        for (int i = 0; i < (BN * BK / 8) / GEMM_THREADS; i++) {
            int c = tid + i * GEMM_THREADS, r = c / (BK / 8), col = (c % (BK / 8)) * 8;
            bool ok = n0 + r < p.n && k0 + col < p.k;
            size_t off = (size_t)(n0 + r) * p.k + k0 + col;
            cp_async16(&S.w1[r * LDS + col], ok ? w1 + off : p.w1, ok);
            if (GATED) cp_async16(&S.w2[r * LDS + col], ok ? w2 + off : p.w2, ok);
        }
        cp_async_commit();
    };

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc1, acc2;
    wmma::fill_fragment(acc1, 0.f);
    wmma::fill_fragment(acc2, 0.f);
    int ktiles = (p.k + BK - 1) / BK;
    load(0, 0);
    for (int kt = 0; kt < ktiles; kt++) {
        if (kt + 1 < ktiles) {
            load((kt + 1) & 1, (kt + 1) * BK);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        Stage<GATED>& S = st[kt & 1];
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
            wmma::load_matrix_sync(a, &S.x[kk], LDS);
            wmma::load_matrix_sync(b, &S.w1[warp * 16 * LDS + kk], LDS);
            wmma::mma_sync(acc1, a, b, acc1);
            if (GATED) {
                wmma::load_matrix_sync(b, &S.w2[warp * 16 * LDS + kk], LDS);
                wmma::mma_sync(acc2, a, b, acc2);
            }
        }
        __syncthreads();  // the buffer is refilled next iteration
    }
    // Epilogue through shared memory (the stages are free now).
    float* o1 = reinterpret_cast<float*>(raw);
    float* o2 = o1 + BM * (BN + 4);
    wmma::store_matrix_sync(o1 + warp * 16, acc1, BN + 4, wmma::mem_row_major);
    if (GATED) wmma::store_matrix_sync(o2 + warp * 16, acc2, BN + 4, wmma::mem_row_major);
    __syncthreads();
    for (int i = tid; i < BM * BN; i += GEMM_THREADS) {
        int r = i / BN, c = i % BN;
        if (r >= rows || n0 + c >= p.n) continue;
        size_t slot = s0 + r;
        if (GATED) {
            p.act_out[slot * p.n + n0 + c] = f2bf(silu_f(o1[r * (BN + 4) + c]) * o2[r * (BN + 4) + c]);
        } else {
            p.f32_out[slot * p.n + n0 + c] = o1[r * (BN + 4) + c] * p.slot_weight[slot];
        }
    }
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS) moe_gate_up(const MoeGemmParams p) { moe_gemm<true>(p); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) moe_down(const MoeGemmParams p) { moe_gemm<false>(p); }
