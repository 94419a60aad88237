// moe_route: the router of a few rows in one launch (HOPPER_ONLY: thread block clusters are
// sm_90), where cuBLAS's logits, moe_router_select and moe_permute were three dependent launches
// of ~8, ~11 and ~4 us at batch 1 (docs/PERF.md), each mostly its own latency. CPU twin:
// backend::cpu::route (the picks), as moe_router.cu's.
#include "common.cuh"
#include "cp_async.cuh"
#include "moe_items.cuh"
#include "route_select.cuh"
#include "stream.cuh"
#include <cooperative_groups.h>

namespace cg = cooperative_groups;

// A cluster of C CTAs takes ROUTE_ROWS rows (moe_route: C = ROUTE_CLUSTER; moe_route_wide, one
// cluster's rows: ROUTE_CLUSTER_WIDE):
// 1. logits: CTA r multiplies the rows by every expert's weights over its run of k chunks (a
//    C-th of the router's weights a CTA, so the weights stream from C SMs), with mma.sync from
//    cp.async stages, into its partial logits in shared memory;
// 2. selection: CTA r sums rows r, r + C, ... over the cluster's partials (through
//    distributed shared memory, in rank order), then a warp a row picks its top-k
//    (route_select_warp);
// 3. (one cluster) the permute: each CTA writes its rows' picks into CTA 0's shared memory and
//    leaves after one cluster barrier; CTA 0 counts them, scans the counts into slot offsets and
//    the work list, and places every pick (where three barriers more, the counting by atomics
//    on CTA 0's memory and each CTA placing its own picks took ~2.8 us: session 18's trace).
// Same picks and weights as moe_router_select on the same logits; the logits differ from
// cuBLAS's by f32 rounding (another summation order). Host: CudaBackend::router and moe.
// Needs experts <= ROUTE_MAX_E and a multiple of 16, groups of a power of two in [2, WARP]
// experts (checked on the host: moe.rs, route_fits).

template <int C>
struct RouteShared {
    float logits[ROUTE_ROWS / C][ROUTE_MAX_E];  // this CTA's rows
    __align__(16) float bias[ROUTE_MAX_E];
    RouteWarp warp[ROUTE_ROWS / C];
    // The permute (one cluster), all in CTA 0: each CTA's selecting warps put their rows' picks
    // (expert, weight) into CTA 0's pick_e / pick_w, row by row; CTA 0 counts them (pick_pos:
    // each pick's place among its expert's), scans the counts into offsets and places them.
    int counts[ROUTE_MAX_E + 1];
    int offset[ROUTE_MAX_E + 1];
    int scan_c[ROUTE_THREADS / WARP], scan_i[ROUTE_THREADS / WARP];
    int pick_e[ROUTE_ROWS][WARP];
    int pick_pos[ROUTE_ROWS][WARP];
    float pick_w[ROUTE_ROWS][WARP];
};

// Phase 1: this CTA's partial logits part[row][expert] over its k chunks (and the bias into
// `bias`). Warp w takes experts 32w..32w+31 (four n8 tiles) for both 16-row tiles.
template <int C>
__device__ __forceinline__ void route_partial_logits(const RouteParams& p, int t0, int rows, int rank, unsigned char* raw, float* part,
                                                     float* bias) {
    constexpr int ST = ROUTE_STAGES, LDS = GEMM_LDS, BK = GEMM_BK;
    const int tid = threadIdx.x, warp = tid / WARP, lane = tid % WARP;
    const int E = p.sel.experts, K = p.hidden;
    auto xs = [&](int s) { return reinterpret_cast<bf16*>(raw + s * route_stage_bytes()); };
    auto ws = [&](int s) { return xs(s) + ROUTE_ROWS * LDS; };
    // This CTA's chunks: a contiguous run of them, so that it reads whole 128-byte pieces of each
    // weight row back to back (chunks r, r + C, ... spread a row's pieces over the cluster's SMs,
    // and the load phase took ~4.4 us at mini's shape).
    const int chunks = (K + BK - 1) / BK, per = (chunks + C - 1) / C;
    const int first = min(rank * per, chunks), mine = min(per, chunks - first);
    // A stage's copies: the weights' (which no kernel writes) and the rows' (which the kernel
    // before writes: only after pdl_wait).
    auto load_w = [&](int s, int i) {
        const int k0 = (first + i) * BK;
        for (int c = tid; c < E * (BK / 8); c += ROUTE_THREADS) {
            const int r = c / (BK / 8), c8 = (c % (BK / 8)) * 8;
            const bool ok = k0 + c8 < K;
            cp_async16(ws(s) + r * LDS + c8, ok ? p.w + (size_t)r * K + k0 + c8 : p.w, ok);
        }
    };
    auto load_x = [&](int s, int i) {
        const int k0 = (first + i) * BK;
        const int r = tid / (BK / 8), c8 = (tid % (BK / 8)) * 8;
        const bool ok = r < rows && k0 + c8 < K;
        cp_async16(xs(s) + r * LDS + c8, ok ? p.x + (size_t)(t0 + r) * K + k0 + c8 : p.x, ok);
    };
    float acc[2][4][4];
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[m][j][c] = 0.f;
    // ldmatrix row addresses, as moe_gemm_mma's: A tile q is (rows +8 if q odd, k +8 if q >= 2);
    // B tile q (weight rows +8 if q >= 2, k +8 if q odd).
    const int a_row = lane % 16, a_col = (lane / 16) * 8;
    const int b_row = lane % 8 + (lane / 16) * 8, b_col = ((lane / 8) % 2) * 8;
    const int e0 = warp * WARP;
    const int mt = rows > 16 ? 2 : 1;  // the second row tile holds no row at <= 16 rows
    // Launched as a programmatic dependent (kernels.rs, launch_dependent), the CTAs may start
    // while the kernel before (add_rms_norm, which writes the rows) still runs: the first stages'
    // weights and the bias (a row's selection reads it; a global load there waited out a DRAM
    // latency a register) are requested before pdl_wait, the rows after. The first commit group
    // holds all of those weights, so the pipeline's waits below stay conservative.
    for (int c = tid; c < E / 4; c += ROUTE_THREADS) cp_async16(bias + 4 * c, p.sel.bias + 4 * c, true);
#pragma unroll
    for (int s = 0; s < ST - 1; s++)
        if (s < mine) load_w(s, s);
    pdl_wait();
#pragma unroll
    for (int s = 0; s < ST - 1; s++) {
        if (s < mine) load_x(s, s);
        cp_async_commit();
    }
    for (int i = 0; i < mine; i++) {
        cp_async_wait<ST - 2>();
        __syncthreads();  // stage i landed for every thread; every thread is past stage i - 1
        if (i + ST - 1 < mine) {
            load_w((i + ST - 1) % ST, i + ST - 1);
            load_x((i + ST - 1) % ST, i + ST - 1);
        }
        cp_async_commit();
        if (e0 >= E) continue;
        const bf16* X = xs(i % ST);
        const bf16* W = ws(i % ST);
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t a[2][4];
#pragma unroll
            for (int m = 0; m < 2; m++)
                if (m < mt) ldsm_x4(a[m], X + (m * 16 + a_row) * LDS + kk + a_col);
#pragma unroll
            for (int q = 0; q < 2; q++) {
                if (e0 + 16 * q >= E) break;  // experts are a multiple of 16
                uint32_t b[4];
                ldsm_x4(b, W + (e0 + 16 * q + b_row) * LDS + kk + b_col);
#pragma unroll
                for (int m = 0; m < 2; m++) {
                    if (m >= mt) break;
                    mma_bf16_16816(acc[m][2 * q], a[m][0], a[m][1], a[m][2], a[m][3], b[0], b[1]);
                    mma_bf16_16816(acc[m][2 * q + 1], a[m][0], a[m][1], a[m][2], a[m][3], b[2], b[3]);
                }
            }
        }
    }
    cp_async_wait<0>();
    // c0, c1: row lane / 4, columns 2 (lane % 4) + {0, 1} of the n8 tile; c2, c3 eight rows down.
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int col = e0 + 8 * j + 2 * (lane % 4);
            if (col >= E) continue;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int r = m * 16 + lane / 4 + 8 * h;
                part[r * ROUTE_MAX_E + col] = acc[m][j][2 * h];
                part[r * ROUTE_MAX_E + col + 1] = acc[m][j][2 * h + 1];
            }
        }
}

// A cluster of C CTAs per ROUTE_ROWS rows (moe_route: ROUTE_CLUSTER; moe_route_wide: the rows
// of one cluster over ROUTE_CLUSTER_WIDE CTAs).
template <int C>
__device__ __forceinline__ void moe_route_body(const RouteParams& p) {
    constexpr int PER = ROUTE_ROWS / C;
    extern __shared__ __align__(128) unsigned char raw[];
    __shared__ RouteShared<C> sh;
    cg::cluster_group cluster = cg::this_cluster();
    const int rank = (int)cluster.block_rank(), tid = threadIdx.x;
    const int t0 = (blockIdx.x / C) * ROUTE_ROWS, rows = min(ROUTE_ROWS, p.sel.tokens - t0);
    const int E = p.sel.experts, picks = p.sel.topk + (p.sel.shared_expert >= 0);
    const int n_experts = E + (p.sel.shared_expert >= 0);  // the permute's experts
    const bool permute = p.slot_token != nullptr;
    float* part = reinterpret_cast<float*>(raw + ROUTE_STAGES * route_stage_bytes());
    if (permute && rank == 0)
        for (int e = tid; e < n_experts; e += ROUTE_THREADS) sh.counts[e] = 0;  // counted after the barriers below

    route_partial_logits<C>(p, t0, rows, rank, raw, part, sh.bias);
    cluster.sync();  // every CTA's partials are out

    // This CTA's rows: the logits over the cluster's partials, in rank order. Every row's
    // partials are read before the first row's stores (a distributed load after a store waits for
    // it, as far as the compiler knows): PER x C loads in flight, not C a row.
    float v[PER][C];
#pragma unroll
    for (int i = 0; i < PER; i++) {
        const int r = rank + i * C;
        if (r >= rows || tid >= E) continue;
#pragma unroll
        for (int c = 0; c < C; c++) v[i][c] = cluster.map_shared_rank(part, c)[r * ROUTE_MAX_E + tid];
    }
#pragma unroll
    for (int i = 0; i < PER; i++) {
        const int r = rank + i * C;
        if (r >= rows || tid >= E) continue;
        float l = v[i][0];
#pragma unroll
        for (int c = 1; c < C; c++) l += v[i][c];
        sh.logits[i][tid] = l;
        // The selection's input (const there) is this kernel's output.
        const_cast<float*>(p.sel.logits)[(size_t)(t0 + r) * E + tid] = l;
    }
    __syncthreads();
    // Warp i selects row rank + i C.
    const int warp = tid / WARP, lane = tid % WARP;
    if (warp < PER && rank + warp * C < rows) {
        const int t = t0 + rank + warp * C;
        int id;
        float sk, sum;
        route_select_warp(p.sel, sh.logits[warp], sh.bias, sh.warp[warp], id, sk, sum);
        if (lane < picks) {
            const auto [e, w, j] = write_pick(p.sel.topk_ids, p.sel.topk_w, t, lane, p.sel.topk, p.sel.shared_expert, p.sel.scale, id, sk, sum);
            if (permute) {
                const int r = rank + warp * C;
                cluster.map_shared_rank(&sh.pick_e[r][0], 0)[lane] = e;
                cluster.map_shared_rank(&sh.pick_w[r][0], 0)[lane] = w;
            } else if (p.sel.counts != nullptr) {
                p.sel.pick_pos[j] = atomicAdd(&p.sel.counts[e], 1);
            }
        }
    }
    // Every row's picks are in CTA 0, and no peer reads another's partials any more: the
    // other CTAs are done (without the permute, each waits here until its partials are read).
    cluster.sync();
    if (!permute || rank != 0) return;
    const int n_picks = rows * picks;
    for (int q = tid; q < n_picks; q += ROUTE_THREADS) {
        const int r = q / picks, k = q % picks;
        sh.pick_pos[r][k] = atomicAdd(&sh.counts[sh.pick_e[r][k]], 1);
    }
    __syncthreads();
    // Slot offsets and the work list, as moe_permute (2 experts a thread).
    constexpr int PER_THREAD = (ROUTE_MAX_E + 1 + ROUTE_THREADS - 1) / ROUTE_THREADS;
    int c[PER_THREAD];
#pragma unroll
    for (int u = 0; u < PER_THREAD; u++) {
        const int e = PER_THREAD * tid + u;
        c[u] = e < n_experts ? sh.counts[e] : 0;
    }
    expert_items<ROUTE_THREADS, PER_THREAD>(c, n_experts, p.tile_m, sh.offset, p.items, p.num_items, sh.scan_c, sh.scan_i);
    __syncthreads();  // every offset is out
    for (int q = tid; q < n_picks; q += ROUTE_THREADS) {
        const int r = q / picks, k = q % picks;
        const int s = sh.offset[sh.pick_e[r][k]] + sh.pick_pos[r][k];
        const int t = t0 + r;
        p.slot_token[s] = t;
        p.slot_weight[s] = sh.pick_w[r][k];
        p.tok_slot[(size_t)t * picks + k] = s;
    }
}

extern "C" __global__ void __cluster_dims__(ROUTE_CLUSTER, 1, 1) __launch_bounds__(ROUTE_THREADS, 1) moe_route(const RouteParams p) {
    moe_route_body<ROUTE_CLUSTER>(p);
}
// One cluster's rows (<= ROUTE_ROWS: a batch-1 step's block) over twice the CTAs, each reading
// half moe_route's slice of the router's weights: flash's 2 MB router took 14.0 against 17.5 us
// a layer (docs/PERF.md, session 38). A non-portable cluster size: the host allows it and takes
// moe_route where the GPU cannot place one (kernels.rs, large_cluster_fits).
extern "C" __global__ void __cluster_dims__(ROUTE_CLUSTER_WIDE, 1, 1) __launch_bounds__(ROUTE_THREADS, 1) moe_route_wide(const RouteParams p) {
    moe_route_body<ROUTE_CLUSTER_WIDE>(p);
}
