// A step's dense projections at a few rows: QKV, attention out, the dense MLP and shared expert
// (gate and up with the SiLU fused, then down), for at most DENSE_STREAM_ROWS rows (a batch-1
// step's block). CPU twin: the same matmuls in backend::cpu.
//   dense_stream:         y[r]   = x[r] w1^T                                    (f32 [rows][n])
//   dense_gate_up_stream: act[r] = bf16(silu(x[r] w1^T) * (x[r] w2^T))          (bf16 [rows][n])
//
// Why not cuBLAS: at 32 rows its GEMMs read these weights at 23-32% of the copy bandwidth (a
// batch-1 step's QKV 9.7 us a layer for 12.6 MB, attention out 9.0 us for 8.4 MB: docs/PERF.md),
// and a step at small batch costs what it reads. A 32-row product is a few microseconds of
// reading, so what matters is how soon the bytes are asked for:
// - every CTA asks for its whole weight tile at once (DENSE_STREAM_COLS rows by one k range, by
//   cp.async into shared memory: 32 KB at mini's hidden size), so an SM has ~128 KB in flight
//   from its first cycles;
// - launched as a programmatic dependent (kernels.rs, launch_dependent), it asks for them before
//   pdl_wait, while the kernel before (the input norm, the attention's combine) still runs: the
//   weights never depend on it, only x does, which is copied after the wait (from L2).
// A matrix has few column tiles (QKV 48 at mini, attention out 32), so k is split over the
// DENSE_STREAM_CLUSTER CTAs of a thread block cluster (HOPPER_ONLY: clusters are sm_90), which
// add their sums through distributed shared memory: each CTA adds one slice of the tile's outputs
// over the cluster's CTAs in rank order, so the sums and their order never depend on timing
// (replays equal eager runs bit for bit) and nothing goes through global memory.
// (The first form streamed the weights into registers a 64-column chunk at a time, one chunk in
// flight a warp, with no programmatic launch: slower than cuBLAS.)
#include "common.cuh"
#include "cp_async.cuh"
#include "stream.cuh"
#include <cooperative_groups.h>

namespace cg = cooperative_groups;

// Dynamic shared memory (the host sizes it: dense.rs, stream_smem): the weight tile
// [MATS][COLS][ld] bf16 and x [ROWS][ld] bf16, ld = k_split + DENSE_STREAM_PAD; once the products
// are done, the CTA's partial sums [MATS][ROWS][DENSE_STREAM_RED_LD] f32 over the weight tile,
// which the cluster reads.
template <bool GATED>
__device__ __forceinline__ void dense_stream_tile(const DenseStreamParams& p) {
    constexpr int MATS = GATED ? 2 : 1, COLS = DENSE_STREAM_COLS, ROWS = DENSE_STREAM_ROWS, T = DENSE_STREAM_THREADS;
    constexpr int WARPS = DENSE_STREAM_WARPS, RLD = DENSE_STREAM_RED_LD;
    static_assert(ROWS == 32 && COLS == 16 * WARPS, "two 16-row MMA tiles of x; 16 weight rows a warp");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int tid = threadIdx.x, warp = tid / WARP, lane = tid % WARP;
    const int n0 = blockIdx.x * COLS, range = blockIdx.y;  // range = the CTA's rank in its cluster
    // Short matrices leave the last ranges empty (kr <= 0): they still add their zeros.
    const int ks = p.k_split, ld = ks + DENSE_STREAM_PAD, k0 = range * ks, kr = max(0, min(ks, p.k - k0));
    bf16* ws = reinterpret_cast<bf16*>(smem_raw);
    bf16* xs = ws + MATS * COLS * ld;
    float* red = reinterpret_cast<float*>(smem_raw);
    // The copies: a warp instruction takes 32 consecutive 16-byte pieces of one row (512 bytes),
    // warp w rows w, w + WARPS, ..; no division a piece (a first form divided by the range's
    // piece count for each, and the kernel was bound by issuing them: ncu, docs/PERF.md). Pieces
    // past kr are zero-filled, so the products may run over whole 16-column steps of the range;
    // weight rows past n and x rows past `rows` only reach outputs that are never written.
    for (int c8 = lane * 8; c8 < ks; c8 += WARP * 8) {
        const bool in_k = c8 < kr;
#pragma unroll
        for (int m = 0; m < MATS; m++) {
            const bf16* w = (GATED && m ? p.w2 : p.w1) + (size_t)(n0 + warp) * p.k + k0 + c8;
#pragma unroll
            for (int j = 0; j < COLS / WARPS; j++) {
                const int r = warp + j * WARPS;
                const bool ok = in_k && n0 + r < p.n;
                cp_async16(ws + (m * COLS + r) * ld + c8, ok ? w + (size_t)j * WARPS * p.k : p.w1, ok);
            }
        }
    }
    cp_async_commit();
    // The kernel after may start its CTAs (it waits for this one's end before it reads y).
    pdl_release();
    pdl_wait();  // x: written by the kernel before
    for (int c8 = lane * 8; c8 < ks; c8 += WARP * 8) {
        const bool in_k = c8 < kr;
        const bf16* x = p.x + (size_t)warp * p.k + k0 + c8;
#pragma unroll
        for (int j = 0; j < ROWS / WARPS; j++) {
            const int r = warp + j * WARPS;
            const bool ok = in_k && r < p.rows;
            cp_async16(xs + r * ld + c8, ok ? x + (size_t)j * WARPS * p.k : p.x, ok);
        }
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();

    // mma.sync as moe_route's: x rows are the A side (two m16 tiles), the warp's 16 weight rows
    // of each matrix the B side (two n8 tiles). ldmatrix row addresses: A tile q is (rows +8 if q
    // odd, k +8 if q >= 2); B tile q (weight rows +8 if q >= 2, k +8 if q odd).
    const int a_row = lane % 16, a_col = (lane / 16) * 8;
    const int b_row = warp * 16 + lane % 8 + (lane / 16) * 8, b_col = ((lane / 8) % 2) * 8;
    const int mt = p.rows > 16 ? 2 : 1;  // the second row tile holds no row at <= 16 rows
    float acc[MATS][2][2][4];
#pragma unroll
    for (int m = 0; m < MATS; m++)
#pragma unroll
        for (int t = 0; t < 2; t++)
#pragma unroll
            for (int j = 0; j < 2; j++)
#pragma unroll
                for (int c = 0; c < 4; c++) acc[m][t][j][c] = 0.f;
    for (int kk = 0; kk < kr; kk += 16) {
        uint32_t a[2][4];
#pragma unroll
        for (int t = 0; t < 2; t++)
            if (t < mt) ldsm_x4(a[t], xs + (t * 16 + a_row) * ld + kk + a_col);
#pragma unroll
        for (int m = 0; m < MATS; m++) {
            uint32_t b[4];
            ldsm_x4(b, ws + (m * COLS + b_row) * ld + kk + b_col);
#pragma unroll
            for (int t = 0; t < 2; t++) {
                if (t >= mt) break;
                mma_bf16_16816(acc[m][t][0], a[t][0], a[t][1], a[t][2], a[t][3], b[0], b[1]);
                mma_bf16_16816(acc[m][t][1], a[t][0], a[t][1], a[t][2], a[t][3], b[2], b[3]);
            }
        }
    }
    // c0, c1: x row lane / 4, weight rows 2 (lane % 4) + {0, 1} of the n8 tile; c2, c3 eight x
    // rows down. Rows of an absent second tile are never read (r >= rows below). The sums go
    // over the weight tile, once every warp is done with it; as pairs of 8 bytes, rows
    // DENSE_STREAM_RED_LD apart, a half-warp's stores fall in different banks.
    __syncthreads();
#pragma unroll
    for (int m = 0; m < MATS; m++)
#pragma unroll
        for (int t = 0; t < 2; t++)
#pragma unroll
            for (int j = 0; j < 2; j++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int r = t * 16 + lane / 4 + 8 * h, col = warp * 16 + 8 * j + 2 * (lane % 4);
                    *reinterpret_cast<float2*>(red + (m * ROWS + r) * RLD + col) = make_float2(acc[m][t][j][2 * h], acc[m][t][j][2 * h + 1]);
                }

    // The cluster's sums: CTA `range` adds slice `range` of the tile's outputs (rows by columns,
    // columns fastest: coalesced writes) over the cluster's CTAs in rank order and writes it.
    constexpr int CL = DENSE_STREAM_CLUSTER, SLICE = ROWS * COLS / CL;
    static_assert(SLICE % T == 0, "the slice is whole rounds of the CTA's threads");
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();
#pragma unroll
    for (int e = tid; e < SLICE; e += T) {
        const int i = range * SLICE + e, r = i / COLS, col = n0 + i % COLS;
        if (r >= p.rows || col >= p.n) continue;
        float v[MATS][CL];
#pragma unroll
        for (int s = 0; s < CL; s++) {  // the loads first, all in flight together
            const float* theirs = cluster.map_shared_rank(red, s);
#pragma unroll
            for (int m = 0; m < MATS; m++) v[m][s] = theirs[(m * ROWS + r) * RLD + i % COLS];
        }
        float s1 = 0.f, s2 = 0.f;
#pragma unroll
        for (int s = 0; s < CL; s++) {
            s1 += v[0][s];
            if constexpr (GATED) s2 += v[MATS - 1][s];
        }
        if constexpr (GATED) {
            p.act_out[(size_t)r * p.n + col] = f2bf(silu_f(s1) * s2);
        } else {
            p.f32_out[(size_t)r * p.n + col] = s1;
        }
    }
    cluster.sync();  // no CTA leaves while another still reads its shared memory
}

extern "C" __global__ void __cluster_dims__(1, DENSE_STREAM_CLUSTER, 1) __launch_bounds__(DENSE_STREAM_THREADS, DENSE_STREAM_CTAS)
    dense_stream(const DenseStreamParams p) {
    dense_stream_tile<false>(p);
}
extern "C" __global__ void __cluster_dims__(1, DENSE_STREAM_CLUSTER, 1) __launch_bounds__(DENSE_STREAM_THREADS, DENSE_STREAM_CTAS)
    dense_gate_up_stream(const DenseStreamParams p) {
    dense_stream_tile<true>(p);
}
