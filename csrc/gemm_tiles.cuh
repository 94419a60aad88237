// The dense products' GEMM tiles on sm_90a (params.h, DENSE_WS_*): persistent CTAs, each with
// DENSE_WS_WGS consumer warpgroups (warpgroup g multiplies rows 64g.. of a DENSE_WS_ROWS-row x tile
// by all DENSE_WS_COLS weight rows of a column tile, one m64n256k16 a k16) and one producer
// warpgroup (x by cp.async, the weights by TMA in boxes of MOE_WS_BOX_ROWS rows) through
// DENSE_WS_STAGES stages. The caller names the work and what becomes of each block of sums
// (its epilogue, in registers): lm_head.cu's lm_head_pick reduces it to a pick, qkv_rope.cu's
// qkv_rope_store normalizes, rotates and stores it.
#pragma once
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#include "common.cuh"
#include "cp_async.cuh"
#include "mbarrier.cuh"
#include "tma.cuh"
#include "wgmma.cuh"

// One piece of the work: the product's rows r0.. by columns n0.. (a DENSE_WS_ROWS x DENSE_WS_COLS
// block) over k-steps [kt0, kt1) of GEMM_BK (all of them, but where the caller splits a block's k).
struct DenseWork {
    int r0, n0, kt0, kt1;
};

// The work's row that a consumer thread's sums of accumulator row `half` belong to: warpgroup g's
// rows 64g.., warp w's 16 of them, lane / 4 within those, half 1 eight further (wgmma's layout).
__device__ __forceinline__ int dense_ws_row(const DenseWork& w, int g, int half) {
    return w.r0 + 64 * g + 16 * ((threadIdx.x % MOE_WG_THREADS) / WARP) + (threadIdx.x % WARP) / 4 + 8 * half;
}

// The product of x ([rows][k] bf16) by the weights of `w_map` (a [n][k] bf16 TMA map: dims (k, n,
// 1), boxes of GEMM_BK x MOE_WS_BOX_ROWS, 128-byte swizzle; zeros past n and k), CTA b taking
// works b, b + gridDim.x, ... of `work` (`count`, and `at(i)`: a DenseWork). For each, `epi`'s
// consumer threads get `prepare(work, i, g)` before its k-steps (loads whose latency the products
// then hide) and `finish(work, i, g, lo, hi)` after them: warpgroup g's sums as
// wgmma_m64n256k16_bf16 leaves them, lo the block's columns 0..127 and hi 128..255. The producers
// stream every work's stages back to back, so a work's epilogue runs while the next one's first
// stages land. Dynamic shared memory: DENSE_WS_SMEM. X_WALKED: the producers' x copies from one
// pointer walked by rows (fewer instructions a stage) instead of each copy's own address. The
// walked form made qkv_rope_store 3-7% faster and lm_head_pick 8-9% slower (session 61, H100; why
// is not known), so each caller says which. DEPENDENT: launched as a programmatic dependent of the
// kernel that writes x (kernels.rs, launch_dependent): the producers ask for the first stages'
// weights, which never depend on it, before their pdl_wait, and copy x only after it. Nothing
// else reads or writes global memory before the consumers' first stage lands, which is after
// that wait.
template <class Work, class Epi, int PRODUCER_REGS = DENSE_WS_PRODUCER_REGS, int CONSUMER_REGS = DENSE_WS_CONSUMER_REGS, bool X_WALKED = false,
          bool DEPENDENT = false>
__device__ __forceinline__ void dense_ws_tiles(const bf16* __restrict__ x, int rows, int k, const void* w_map, const Work& work, Epi& epi) {
    constexpr int ST = DENSE_WS_STAGES, BK = GEMM_BK, XB = DENSE_WS_ROWS * BK * 2, BOX = MOE_WS_BOX_ROWS * BK * 2;
    constexpr int BOXES = DENSE_WS_COLS / MOE_WS_BOX_ROWS, CONSUMERS = DENSE_WS_WGS * MOE_WG_THREADS;
    constexpr int PRODUCERS = MOE_WG_THREADS, CHUNKS = BK / 8;  // 16-byte chunks of an x row a stage
    static_assert(DENSE_WS_ROWS == 64 * DENSE_WS_WGS && DENSE_WS_COLS == 256, "a warpgroup's 64 rows by one m64n256k16");
    extern __shared__ __align__(1024) unsigned char raw[];
    unsigned char* base = raw + ((1024 - ((uint32_t)__cvta_generic_to_shared(raw) & 1023)) & 1023);
    uint64_t* full = reinterpret_cast<uint64_t*>(base + ST * DENSE_WS_STAGE_BYTES);
    uint64_t* empty = full + ST;
    if (threadIdx.x == 0) {
        for (int s = 0; s < ST; s++) {
            mbar_init(&full[s], PRODUCERS + 1);  // the producers' copies, and the expect-tx arrival
            mbar_init(&empty[s], CONSUMERS);
        }
        mbar_init_fence();
    }
    __syncthreads();
    if (threadIdx.x >= CONSUMERS) {
        setmaxnreg_dec<PRODUCER_REGS>();  // to the consumers (params.h)
        const int pt = threadIdx.x - CONSUMERS, c8 = (pt % CHUNKS) * 8;
        if (pt == 0) tma_prefetch_map(w_map);
        // Stage s's weight boxes for columns n0.. at k-step kt, and the bytes its barrier expects.
        auto load_weights = [&](int s, int n0, int kt) {
            unsigned char* X = base + s * DENSE_WS_STAGE_BYTES;
            mbar_arrive_expect_tx(&full[s], BOXES * BOX);
#pragma unroll
            for (int j = 0; j < BOXES; j++) tma_load_3d(X + XB + j * BOX, w_map, kt * BK, n0 + MOE_WS_BOX_ROWS * j, 0, &full[s]);
        };
        if constexpr (DEPENDENT) {
            if (pt == 0) {
                int it = 0;
                for (int i = blockIdx.x; i < work.count && it < ST; i += gridDim.x) {
                    const DenseWork w = work.at(i);
                    for (int kt = w.kt0; kt < w.kt1 && it < ST; kt++, it++) load_weights(it, w.n0, kt);
                }
            }
            pdl_wait();  // x: written by the kernel before
        }
        int it = 0;  // stages issued
        for (int i = blockIdx.x; i < work.count; i += gridDim.x) {
            const DenseWork w = work.at(i);
            for (int kt = w.kt0; kt < w.kt1; kt++, it++) {
                const int s = it % ST, k0 = kt * BK;
                if (it >= ST) mbar_wait(&empty[s], (it / ST - 1) & 1);
                unsigned char* X = base + s * DENSE_WS_STAGE_BYTES;
                if (pt == 0 && !(DEPENDENT && it < ST)) load_weights(s, w.n0, kt);
                // x: row r's chunk c8 for r = pt / CHUNKS + 16 j, zeros past the rows and k.
                constexpr int RSTEP = PRODUCERS / CHUNKS;
                if constexpr (X_WALKED) {
                    // One pointer walked 16 rows at a time, the destinations at fixed offsets (16
                    // rows are 2 KB of the stage under the same swizzle): ~113 instructions a stage
                    // against ~185 for qkv_rope_store, whose producers bound how fast its stages
                    // filled (session 61).
                    const int rows_left = rows - w.r0 - pt / CHUNKS;  // row pt / CHUNKS + 16 j is x's while 16 j < this
                    const bool k_ok = k0 + c8 < k;
                    const bf16* src = x + (size_t)(w.r0 + pt / CHUNKS) * k + k0 + c8;
                    unsigned char* dst = X + sw128_offset(pt / CHUNKS, c8 / 8);
#pragma unroll
                    for (int j = 0; j < DENSE_WS_ROWS / RSTEP; j++, src += (size_t)RSTEP * k) {
                        const bool ok = k_ok && j * RSTEP < rows_left;
                        cp_async16(dst + j * RSTEP * 128, ok ? src : x, ok);
                    }
                } else {
#pragma unroll
                    for (int j = 0; j < DENSE_WS_ROWS / RSTEP; j++) {
                        const int r = pt / CHUNKS + j * RSTEP;
                        const bool ok = w.r0 + r < rows && k0 + c8 < k;
                        cp_async16(X + sw128_offset(r, c8 / 8), ok ? x + (size_t)(w.r0 + r) * k + k0 + c8 : x, ok);
                    }
                }
                cp_async_arrive_noinc(&full[s]);
            }
        }
        cp_async_wait<0>();  // no copy outlives its thread
        return;
    }
    setmaxnreg_inc<CONSUMER_REGS>();
    const int g = threadIdx.x / MOE_WG_THREADS;
    int it = 0;  // stages consumed
    for (int i = blockIdx.x; i < work.count; i += gridDim.x) {
        const DenseWork w = work.at(i);
        epi.prepare(w, i, g);
        float lo[64], hi[64];
#pragma unroll
        for (int j = 0; j < 64; j++) lo[j] = hi[j] = 0.f;
        for (int kt = w.kt0; kt < w.kt1; kt++, it++) {
            const int s = it % ST;
            mbar_wait(&full[s], (it / ST) & 1);
            fence_proxy_async();  // the x tile's cp.async writes, seen by the wgmmas below
            const unsigned char* X = base + s * DENSE_WS_STAGE_BYTES;
            const uint64_t da = sw128_desc(X + g * 64 * 128), db = sw128_desc(X + XB);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) wgmma_m64n256k16_bf16(lo, hi, da + 2 * kk, db + 2 * kk);
            wgmma_commit();
            wgmma_wait<0>();
            mbar_arrive(&empty[s]);
        }
        wgmma_reg_fence(lo);
        wgmma_reg_fence(hi);
        epi.finish(w, i, g, lo, hi);
    }
}
#endif
