// A step's dense projections at a few rows as a weight stream: QKV, attention out, the dense MLP
// and shared expert (gate and up with the SiLU fused, then down) and the router's logits, for at
// most DENSE_STREAM_ROWS rows (a batch-1 step's block).
//   dense_stream:         y[r]   = x[r] w1^T                                    (f32 [rows][n])
//   dense_gate_up_stream: act[r] = bf16(silu(x[r] w1^T) * (x[r] w2^T))          (bf16 [rows][n])
//
// Why not cuBLAS: at 32 rows its GEMMs read these weights at 6-39% of the copy bandwidth
// (docs/PERF.md), and a step at small batch costs what it reads. So they are streamed like the
// experts of moe_stream.cu (whose register layouts this kernel shares: see its header): weights
// straight into registers with 16-byte loads, on the m16n8k16 MMA's 16-row side, x as B.
//
// Unlike an expert's few rows, all 32 rows of x meet every weight: read from L2 by each warp they
// would be twice the weight bytes. So a CTA first copies its k range of x into shared memory
// (its first weight chunk already in flight), and its warps, 16 weight rows each, read x there.
// A matrix has few column tiles (QKV 40 at flash TP2, the router 4), so k is split over the
// DENSE_STREAM_CLUSTER CTAs of a thread block cluster (HOPPER_ONLY: clusters are sm_90), which
// add their sums through distributed shared memory: each CTA adds one slice of the tile's outputs
// over the cluster's CTAs in rank order, so the sums and their order never depend on timing
// (replays equal eager runs bit for bit) and nothing goes through global memory.
#include "common.cuh"
#include "stream.cuh"
#include <cooperative_groups.h>

namespace cg = cooperative_groups;

// One chunk's weights for this thread: rows g and g + 8 of its warp's 16, two 16-byte pieces
// each (w1, and w2 if gated).
template <bool GATED>
struct DenseRegs {
    uint4 w1[2][2];
    uint4 w2[GATED ? 2 : 1][GATED ? 2 : 1];
};

template <bool GATED>
__device__ __forceinline__ void dense_stream_tile(const DenseStreamParams& p) {
    constexpr int NT = DENSE_STREAM_ROWS / 8, KC = DENSE_STREAM_KC, MATS = GATED ? 2 : 1;
    static_assert(KC == 4 * 2 * 8, "a chunk row is 4 threads x 2 pieces x 8 bf16");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16* xs = reinterpret_cast<bf16*>(smem_raw);  // [rows][ld]: x[:, k0 .. k0 + kr)
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP, g = lane / 4, t = lane % 4;
    const int tile = blockIdx.x, range = blockIdx.y;  // range = the CTA's rank in its cluster
    const int n0 = tile * DENSE_STREAM_COLS + warp * 16;
    // Short matrices leave the last ranges empty (kr <= 0): they still add their zeros.
    const int k0 = range * p.k_split, kr = max(0, min(p.k_split, p.k - k0)), ld = p.k_split + DENSE_STREAM_PAD;
    const int chunks = (kr + KC - 1) / KC;

    // Thread t's pieces of chunk c (of this range): bf16 [8 (t + 4 i), +8) of the chunk, weight
    // rows g and g + 8 (rows past n and k past the range read nothing and give zeros).
    auto load = [&](DenseRegs<GATED>& r, int c) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int row = n0 + g + 8 * h;
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int kl = c * KC + 8 * (t + 4 * i);
                const bool ok = row < p.n && kl < kr;
                const size_t off = (size_t)row * p.k + k0 + kl;
                r.w1[h][i] = ok ? ld_stream(p.w1 + off) : make_uint4(0, 0, 0, 0);
                if constexpr (GATED) r.w2[h][i] = ok ? ld_stream(p.w2 + off) : make_uint4(0, 0, 0, 0);
            }
        }
    };
    DenseRegs<GATED> cur, nxt;
    if (chunks > 0) load(cur, 0);

    // x[:, k0 .. k0 + kr) into shared memory, 16 bytes a thread at a time (kr is a multiple of 8).
    const int pieces = kr / 8;
    for (int i = threadIdx.x; i < p.rows * pieces; i += blockDim.x) {
        const int r = i / pieces, c8 = i % pieces;
        *reinterpret_cast<uint4*>(xs + r * ld + 8 * c8) = __ldg(reinterpret_cast<const uint4*>(p.x + (size_t)r * p.k + k0 + 8 * c8));
    }
    __syncthreads();

    // x rows 8 j + g are the B side of n8 tile j; tiles wholly past the rows are skipped.
    const int nt_live = (p.rows + 7) / 8;
    float acc1[NT][4], acc2[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) acc1[j][q] = acc2[j][q] = 0.f;

    // Each 16-byte piece i feeds two MMAs (words 2m, 2m + 1 are MMA m's k 2t..2t+1, 2t+8..2t+9, on
    // both sides), each against every live n8 tile of x.
    auto multiply = [&](const DenseRegs<GATED>& r, int c) {
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int kl = c * KC + 8 * (t + 4 * i);
            uint32_t xb[NT][4];
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int row = 8 * j + g;
                const uint4 a = row < p.rows && kl < kr ? *reinterpret_cast<const uint4*>(xs + row * ld + kl) : make_uint4(0, 0, 0, 0);
                xb[j][0] = a.x, xb[j][1] = a.y, xb[j][2] = a.z, xb[j][3] = a.w;
            }
#pragma unroll
            for (int m = 0; m < 2; m++) {
                const uint32_t* u0 = reinterpret_cast<const uint32_t*>(&r.w1[0][i]);
                const uint32_t* u1 = reinterpret_cast<const uint32_t*>(&r.w1[1][i]);
                const uint32_t* v0 = reinterpret_cast<const uint32_t*>(&r.w2[0][GATED ? i : 0]);
                const uint32_t* v1 = reinterpret_cast<const uint32_t*>(&r.w2[GATED ? 1 : 0][GATED ? i : 0]);
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    if (j >= nt_live) break;
                    mma_bf16_16816(acc1[j], u0[2 * m], u1[2 * m], u0[2 * m + 1], u1[2 * m + 1], xb[j][2 * m], xb[j][2 * m + 1]);
                    if constexpr (GATED)
                        mma_bf16_16816(acc2[j], v0[2 * m], v1[2 * m], v0[2 * m + 1], v1[2 * m + 1], xb[j][2 * m], xb[j][2 * m + 1]);
                }
            }
        }
    };
    for (int c = 0; c < chunks; c++) {
        if (c + 1 < chunks) load(nxt, c + 1);
        multiply(cur, c);
        cur = nxt;
    }

    // The cluster's sums: every CTA parks its warps' (lane fastest), then CTA `range` adds slice
    // `range` of the tile's outputs over the cluster's CTAs in rank order and writes it.
    constexpr int CL = DENSE_STREAM_CLUSTER, PER_MAT = DENSE_STREAM_WARPS * NT * 4 * WARP, SLICE = PER_MAT / CL;
    static_assert(PER_MAT % CL == 0, "the cluster's CTAs take equal slices");
    __shared__ float red[DENSE_STREAM_WARPS][MATS][NT][4][WARP];
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) {
            red[warp][0][j][q][lane] = acc1[j][q];
            if constexpr (GATED) red[warp][MATS - 1][j][q][lane] = acc2[j][q];
        }
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();
    for (int e = threadIdx.x; e < SLICE; e += blockDim.x) {
        // Output e of the slice: (warp w, n8 tile j, C element q, lane l) of the tile.
        const int i = range * SLICE + e, l = i % WARP, q = (i / WARP) % 4, j = (i / (4 * WARP)) % NT, w = i / (4 * WARP * NT);
        const int col = tile * DENSE_STREAM_COLS + w * 16 + l / 4 + 8 * (q / 2), r = 8 * j + 2 * (l % 4) + q % 2;
        if (r >= p.rows || col >= p.n) continue;
        float v1[CL], v2[CL];
#pragma unroll
        for (int s = 0; s < CL; s++) {  // the loads first, all in flight together
            const float* theirs = cluster.map_shared_rank(&red[0][0][0][0][0], s);
            v1[s] = theirs[(((w * MATS) * NT + j) * 4 + q) * WARP + l];
            v2[s] = GATED ? theirs[(((w * MATS + MATS - 1) * NT + j) * 4 + q) * WARP + l] : 0.f;
        }
        float s1 = 0.f, s2 = 0.f;
#pragma unroll
        for (int s = 0; s < CL; s++) s1 += v1[s], s2 += v2[s];
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
