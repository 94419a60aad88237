// The routed experts at small batch as a weight stream: the grouped GEMMs of moe_gemm.cu
// (same work items, same outputs) for items of at most 8 * NT rows, written for the case where
// an expert gets a few rows, so the cost is reading its weights once and nothing else.
//   moe_gate_up_stream: act[slot] = bf16(silu(x w_gate^T) * (x w_up^T)), x = h[slot_token[slot]]
//   moe_down_stream:    out[slot] = bf16(slot_weight[slot] * (act[slot] w_down^T))
//
// Why not moe_gemm.cu's tiles: those stage the weights through shared memory and run 16-row
// WMMA tiles of which 1-2 rows are real at batch 1; this kernel loads the weights straight into
// registers (16-byte loads, one chunk in flight while the previous one is multiplied) and puts
// them on the MMA's 16-row side ("swap AB"): a warp computes 16 weight rows (output columns) x
// 8 * NT item rows with mma.sync m16n8k16, the weights as A, the item's rows as B.
//
// The k order inside an MMA is free (a dot product does not care), so each thread feeds the MMA
// the k values it loaded itself, no shuffles. m16n8k16 (bf16, f32 accumulate) register layouts,
// g = lane / 4, t = lane % 4:
//   A (16 x 16, row-major): a0 = (row g, k 2t..2t+1), a1 = (row g+8, k 2t..2t+1),
//                           a2 = (row g, k 2t+8..2t+9), a3 = (row g+8, k 2t+8..2t+9)
//   B (16 x 8, col-major):  b0 = (k 2t..2t+1, col g), b1 = (k 2t+8..2t+9, col g)
//   C (16 x 8, f32):        c0, c1 = (row g, cols 2t, 2t+1), c2, c3 = (row g+8, cols 2t, 2t+1)
// A thread holding 4 consecutive physical k values p..p+3 of weight rows g and g+8 and of item
// row g uses them as the MMA's k 2t, 2t+1, 2t+8, 2t+9: the 4 threads of a group cover 16
// distinct physical k, the same ones on both sides.
//
// A CTA is STREAM_WARPS warps: WK of them split k (chunks dealt round-robin, partial sums added
// in shared memory at the end) and STREAM_WARPS / WK take 16 weight rows each. gate_up (k =
// hidden, long) splits k 4 ways; down (k = intermediate, short) gives each warp its own rows.
// The grid is persistent (as many CTAs as the GPU holds): a CTA walks (item, row tile) units
// gridDim.x apart, and the next unit's first chunk is loaded during the last chunk of this one.
// At realistic routing this streams at 76-84% of the copy bandwidth (bf16, batch 1, H200;
// docs/PERF.md). A shared-memory cp.async ring instead of the registers measured no faster
// (bf16; fp8: 1.6% faster at flash's batch 1, session 37, where the fp8 tiles below are 15%).
//
// fp8 experts' 16-row items take those tiles (moe_*_fp8_m16, at the end of this file) by default:
// the same math with the weights and x shared through shared memory by a CTA's four warps. The
// fp8 streams stay for measuring against them (CudaOptions::fp8_m16_tiles).
//
// FP8 (W8A16): the MMAs of the fp8 instances run on f16 operands. A chunk's codes a thread are
// widened e4m3 -> f16 in registers, two codes an instruction (cvt.rn.f16x2.e4m3x2, sm_89 on;
// exact: every e4m3 value is an f16 value), and the item rows' bf16 values are converted to f16
// as they are loaded (exact within f16's range; beyond +-65504 they saturate, see docs/MODEL.md).
// Earlier the codes were widened to bf16 by bit operations and a multiply (five instructions
// for two codes), which left these kernels issue-bound at 64% of the copy bandwidth on flash
// where the bf16 ones stream at 89% (docs/PERF.md). Each chunk (Chunk::kc codes) lies in one
// 128 x 128 scale block, so its product goes into its own accumulator and is added times the
// block scale in f32: the sum is sum(x * e4m3) * scale_inv per block, as in moe_gemm.cu. Before
// sm_89 (the sm_80 build) the codes widen by bit operations to f16 scaled by 2^-8 (exact,
// subnormals included), and the block scale is taken times 2^8.
#include "common.cuh"
#include "cp_async.cuh"
#include "moe_items.cuh"
#include "stream.cuh"

// k elements (bf16) or codes (fp8) of one weight row a warp multiplies per chunk: 4 threads x
// 16 bytes x 2 loads (bf16), 4 threads x 16 bytes x 1 load (fp8).
template <bool FP8>
struct Chunk {
    static constexpr int kc = FP8 ? STREAM_CHUNK_FP8 : STREAM_CHUNK_BF16;
    static constexpr int loads = 2;  // 16-byte loads a weight row a thread
};

// Two e4m3 codes (bytes 0/1 or 2/3 of w, per `hi`) -> f16x2, low k in the low half: the codes'
// values times 1 / FP8_CODE_UNSCALE (1, or 2^-8 before sm_89).
#if __CUDA_ARCH__ >= 890
constexpr float FP8_CODE_UNSCALE = 1.f;
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t w, bool hi) {
    const unsigned short codes = hi ? (unsigned short)(w >> 16) : (unsigned short)(w & 0xFFFFu);
    uint32_t out;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(out) : "h"(codes));
    return out;
}
#else
constexpr float FP8_CODE_UNSCALE = 256.f;
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t w, bool hi) {
    const uint32_t r = __byte_perm(w, 0, hi ? 0x3424 : 0x1404);  // lanes = code << 8
    return (r & 0x80008000u) | ((r >> 1) & 0x3F803F80u);         // sign | exponent, mantissa
}
#endif

// bf16x2 -> f16x2 (the item rows' values, B operand of the fp8 MMAs), saturating at +-65504.
__device__ __forceinline__ uint32_t bf16x2_to_f16x2(uint32_t v) {
    const float lo = __uint_as_float(v << 16), hi = __uint_as_float(v & 0xFFFF0000u);
    uint32_t out;
    asm("cvt.rn.satfinite.f16x2.f32 %0, %1, %2;\n" : "=r"(out) : "f"(hi), "f"(lo));
    return out;
}

// One chunk's weights for this thread: rows g and g + 8 of the warp's 16 (w1, and w2 if gated).
template <bool GATED, bool FP8>
struct WeightRegs {
    uint4 w1[2][Chunk<FP8>::loads];
    uint4 w2[GATED ? 2 : 1][GATED ? Chunk<FP8>::loads : 1];
};

template <int NT, int WK, bool GATED, bool FP8>
__device__ __forceinline__ void moe_stream(const MoeGemmParams& p) {
    constexpr int KC = Chunk<FP8>::kc, LOADS = Chunk<FP8>::loads, WN = STREAM_WARPS / WK;
    constexpr int EB = FP8 ? 1 : 2;  // bytes a weight element
    constexpr int CTA_ROWS = 16 * WN;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP, g = lane / 4, t = lane % 4;
    const int wk = warp % WK, wn = warp / WK;
    const int tiles_n = (p.n + CTA_ROWS - 1) / CTA_ROWS;
    const int chunks = (p.k + KC - 1) / KC;
    const size_t wstride = (size_t)p.n * p.k * EB;  // bytes an expert
    const unsigned char* w1base = FP8 ? (const unsigned char*)p.w1_fp8 : (const unsigned char*)p.w1;
    const unsigned char* w2base = !GATED ? nullptr : FP8 ? (const unsigned char*)p.w2_fp8 : (const unsigned char*)p.w2;

    // Work unit u = (item u / tiles_n, CTA_ROWS weight rows u % tiles_n): this warp's expert,
    // first weight row, and the item's first slot and rows.
    struct Unit {
        int e, n0, s0, rows;
    };
    auto unit = [&](int u) {
        const int item = u / tiles_n;
        return Unit{p.items[3 * item], (u % tiles_n) * CTA_ROWS + wn * 16, p.items[3 * item + 1], p.items[3 * item + 2]};
    };
    // gate_up lets its down launch (a programmatic dependent, CudaOptions::expert_pdl) place its
    // CTAs as this grid's retire, where they load their first weights during this one's tail.
    if constexpr (GATED) pdl_release();
    // The grid is sized for the most items a step can have (host: max_items * tiles_n units);
    // the item list itself says how many there are. Read both at once: the unit's entry exists
    // (u < max_items * tiles_n) even when it is past the count.
    int u = blockIdx.x;
    Unit cu = unit(u);
    const int units = *p.num_items * tiles_n;
    if (u >= units) return;

    // Thread t's 16-byte loads of chunk c of a unit: bytes [16 (t + 4 i), +16) of the chunk's
    // row segment, rows g and g + 8 (rows past n read nothing and give zeros).
    // A unit's expert matrices (w2: gated only). The shared expert's (bf16 only) lie apart from
    // the routed experts' array.
    struct Matrices {
        const unsigned char *w1, *w2;
    };
    auto matrices = [&](const Unit& un) {
        const bool shared = !FP8 && un.e == p.shared_expert;
        const unsigned char* e1 = shared ? (const unsigned char*)p.shared_w1 : w1base + un.e * wstride;
        const unsigned char* e2 = !GATED ? nullptr : shared ? (const unsigned char*)p.shared_w2 : w2base + un.e * wstride;
        return Matrices{e1, e2};
    };
    auto load = [&](WeightRegs<GATED, FP8>& r, const Unit& un, int c) {
        const auto [e1, e2] = matrices(un);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int row = un.n0 + g + 8 * h;
#pragma unroll
            for (int i = 0; i < LOADS; i++) {
                const int kk = c * KC + (16 / EB) * (t + 4 * i);  // first k of this 16-byte piece
                const bool ok = row < p.n && kk < p.k;
                const size_t off = ((size_t)row * p.k + kk) * EB;
                r.w1[h][i] = ok ? ld_stream(e1 + off) : make_uint4(0, 0, 0, 0);
                if constexpr (GATED) r.w2[h][i] = ok ? ld_stream(e2 + off) : make_uint4(0, 0, 0, 0);
            }
        }
    };

    // Multiply one chunk into (st1, st2): for each 16-byte piece i, its MMAs (bf16: 2 of 4 k;
    // fp8: 4 of 4 k), each against every live n8 tile of the item's rows.
    auto multiply = [&](const WeightRegs<GATED, FP8>& r, int c, const bf16* const (&xrow)[NT], int nt_live,
                        float (&st1)[NT][4], float (&st2)[NT][4]) {
#pragma unroll
        for (int i = 0; i < LOADS; i++) {
            const int kk = c * KC + (16 / EB) * (t + 4 * i);
            // The item rows' k values matching this piece: 8 (bf16) or 16 (fp8).
            uint32_t xb[NT][FP8 ? 8 : 4];
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const bool ok = xrow[j] != nullptr && kk < p.k;
                const uint4 a = ok ? __ldg(reinterpret_cast<const uint4*>(xrow[j] + kk)) : make_uint4(0, 0, 0, 0);
                xb[j][0] = a.x, xb[j][1] = a.y, xb[j][2] = a.z, xb[j][3] = a.w;
                if constexpr (FP8) {
                    const uint4 b = ok ? __ldg(reinterpret_cast<const uint4*>(xrow[j] + kk + 8)) : make_uint4(0, 0, 0, 0);
                    xb[j][4] = b.x, xb[j][5] = b.y, xb[j][6] = b.z, xb[j][7] = b.w;
#pragma unroll
                    for (int q = 0; q < 8; q++) xb[j][q] = bf16x2_to_f16x2(xb[j][q]);
                }
            }
            constexpr int MMAS = FP8 ? 4 : 2;  // MMAs a 16-byte piece feeds
#pragma unroll
            for (int m = 0; m < MMAS; m++) {
                // A registers of MMA m for both matrices: (g, lo), (g+8, lo), (g, hi), (g+8, hi).
                uint32_t a1[4], a2[4];
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const uint32_t* v1 = reinterpret_cast<const uint32_t*>(&r.w1[h][i]);
                    const uint32_t* v2 = reinterpret_cast<const uint32_t*>(&r.w2[GATED ? h : 0][GATED ? i : 0]);
                    if constexpr (FP8) {  // word m holds this MMA's 4 codes
                        a1[h] = e4m3x2_to_f16x2(v1[m], false);
                        a1[h + 2] = e4m3x2_to_f16x2(v1[m], true);
                        if constexpr (GATED) {
                            a2[h] = e4m3x2_to_f16x2(v2[m], false);
                            a2[h + 2] = e4m3x2_to_f16x2(v2[m], true);
                        }
                    } else {  // words 2m, 2m + 1 hold this MMA's 4 values
                        a1[h] = v1[2 * m];
                        a1[h + 2] = v1[2 * m + 1];
                        if constexpr (GATED) {
                            a2[h] = v2[2 * m];
                            a2[h + 2] = v2[2 * m + 1];
                        }
                    }
                }
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    if (j >= nt_live) break;
                    if constexpr (FP8) {
                        mma_f16_16816(st1[j], a1[0], a1[1], a1[2], a1[3], xb[j][2 * m], xb[j][2 * m + 1]);
                        if constexpr (GATED) mma_f16_16816(st2[j], a2[0], a2[1], a2[2], a2[3], xb[j][2 * m], xb[j][2 * m + 1]);
                    } else {
                        mma_bf16_16816(st1[j], a1[0], a1[1], a1[2], a1[3], xb[j][2 * m], xb[j][2 * m + 1]);
                        if constexpr (GATED) mma_bf16_16816(st2[j], a2[0], a2[1], a2[2], a2[3], xb[j][2 * m], xb[j][2 * m + 1]);
                    }
                }
            }
        }
    };

    // red[wn][wk - 1][matrix][j][q][lane]: the WK - 1 other warps' partial sums of a row tile
    // (lane fastest: conflict-free).
    __shared__ float red[WN][WK > 1 ? WK - 1 : 1][GATED ? 2 : 1][NT][4][WARP];

    // L2 prefetch hints (p.prefetch_ahead > 0): the registers hold one chunk in flight a warp, too
    // few bytes to cover DRAM's latency where the CTAs an SM are few (the fp8 kernels' registers
    // allow 3-4), so each warp also hints chunk c's weight lines into L2 a few of its chunks
    // ahead: a line a lane (a chunk's row segment is one 128-byte line: lanes 0-15 the w1 rows,
    // 16-31 the w2 rows when gated), nothing waits on them, and the loads then hit L2.
    static_assert(Chunk<FP8>::kc * EB == 128, "a chunk's row segment is one 128-byte line");
    auto prefetch = [&](const Unit& un, int c) {
        const int row = un.n0 + lane % 16, m = lane / 16;
        if (c >= chunks || row >= p.n || (m == 1 && !GATED)) return;
        const Matrices w = matrices(un);
        const unsigned char* line = (m == 0 ? w.w1 : w.w2) + ((size_t)row * p.k + (size_t)c * KC) * EB;
        asm volatile("prefetch.global.L2 [%0];" ::"l"(line));
    };
    const int ahead = p.prefetch_ahead;

    // This warp's chunks of each unit are wk, wk + WK, ...; one chunk's loads are in flight while
    // the previous one is multiplied, across units too (the next unit's first chunk is loaded
    // during the last chunk of this one, so the reduction and the writes hide behind it).
    WeightRegs<GATED, FP8> cur, nxt;
    if (wk < chunks) load(cur, cu, wk);
    // Launched as gate_up's programmatic dependent, down reads nothing gate_up writes until here:
    // the items, routing weights and weights come from the router and the checkpoint. So its
    // first chunk (and the hinted ones after it) stream in while gate_up's last CTAs finish.
    if constexpr (!GATED) {
        for (int a = 2; a <= STREAM_PDL_AHEAD; a++) prefetch(cu, wk + (a - 1) * WK);
        pdl_wait();  // the act rows gate_up wrote
    }
    while (true) {
        const int un = u + gridDim.x;
        Unit nu{};
        if (un < units) nu = unit(un);
        // The item's rows g + 8 j: the B side of n8 tile j (null past the item: zeros).
        const bf16* xrow[NT];
#pragma unroll
        for (int j = 0; j < NT; j++) {
            const int r = j * 8 + g;
            xrow[j] = r < cu.rows ? p.x + (size_t)(GATED ? p.slot_token[cu.s0 + r] : cu.s0 + r) * p.k : nullptr;
        }
        // The bf16 down rows' routing weights for the epilogue (C rows 8 j + 2 t, + 1),
        // requested with the unit's first chunk: read at the stores, each was a dependent load
        // there (the compiler cannot move it above the previous row's bf16 store). The fp8
        // stream keeps reading them at the stores: requested here it took 14.60 against 14.08
        // ms a flash batch-1 step (docs/perf/session21/flash-ab/).
        constexpr bool EARLY_WT = !GATED && !FP8;
        float wt[NT][2] = {};
        if constexpr (EARLY_WT) load_n_row_weights(p, cu.s0, cu.rows, wt);
        // n8 tiles wholly past the item's rows multiply zeros: skip them (warp-uniform).
        const int nt_live = (cu.rows + 7) / 8;
        float acc1[NT][4], acc2[NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc1[j][q] = acc2[j][q] = 0.f;
        const int scols = (p.k + FP8_BLOCK - 1) / FP8_BLOCK;
        const size_t srow = ((size_t)cu.e * ((p.n + FP8_BLOCK - 1) / FP8_BLOCK) + cu.n0 / FP8_BLOCK) * scols;
        // The unit's first chunk is in flight already and its first step loads the second: hint
        // the ones after it up to `ahead` beyond the load, then (in the loop) one more a step.
        for (int a = 2; a <= ahead; a++) prefetch(cu, wk + a * WK);
        for (int c = wk; c < chunks; c += WK) {
            if (c + WK < chunks) {
                load(nxt, cu, c + WK);
            } else if (un < units) {
                load(nxt, nu, wk);
            }
            if (ahead > 0) prefetch(cu, c + (ahead + 1) * WK);
            if constexpr (FP8) {
                float st1[NT][4], st2[NT][4];
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int q = 0; q < 4; q++) st1[j][q] = st2[j][q] = 0.f;
                multiply(cur, c, xrow, nt_live, st1, st2);
                const int sb = (c * KC) / FP8_BLOCK;
                const float s1 = p.w1_scale[srow + sb] * FP8_CODE_UNSCALE, s2 = GATED ? p.w2_scale[srow + sb] * FP8_CODE_UNSCALE : 0.f;
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int q = 0; q < 4; q++) {
                        acc1[j][q] += s1 * st1[j][q];
                        if (GATED) acc2[j][q] += s2 * st2[j][q];
                    }
            } else {
                multiply(cur, c, xrow, nt_live, acc1, acc2);
            }
            cur = nxt;
        }

        // Add the WK partial sums of each row tile: warps wk > 0 park theirs, warp wk = 0 adds
        // and writes.
        bool writer = true;
        if constexpr (WK > 1) {
            if (wk > 0) {
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int q = 0; q < 4; q++) {
                        red[wn][wk - 1][0][j][q][lane] = acc1[j][q];
                        if (GATED) red[wn][wk - 1][GATED ? 1 : 0][j][q][lane] = acc2[j][q];
                    }
            }
            __syncthreads();
            writer = wk == 0;
            if (writer) {
#pragma unroll
                for (int w = 0; w < WK - 1; w++)
#pragma unroll
                    for (int j = 0; j < NT; j++)
#pragma unroll
                        for (int q = 0; q < 4; q++) {
                            acc1[j][q] += red[wn][w][0][j][q][lane];
                            if (GATED) acc2[j][q] += red[wn][w][GATED ? 1 : 0][j][q][lane];
                        }
            }
        }
        // C element q of tile j: weight row n0 + g + 8 (q / 2), item row 8 j + 2 t + q % 2.
        if (writer) {
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const int col = cu.n0 + g + 8 * (q / 2), r = 8 * j + 2 * t + q % 2;
                    if (r >= cu.rows || col >= p.n) continue;
                    const size_t slot = cu.s0 + r;
                    if (GATED) {
                        p.act_out[slot * p.n + col] = f2bf(silu_f(acc1[j][q]) * acc2[j][q]);
                    } else {
                        p.slot_out[slot * p.n + col] = f2bf(acc1[j][q] * (EARLY_WT ? wt[j][q % 2] : p.slot_weight[slot]));
                    }
                }
        }
        if (un >= units) break;
        if constexpr (WK > 1) __syncthreads();  // red is refilled by the next unit
        u = un;
        cu = nu;
    }
}

// Items of up to MOE_BM_SMALL = 16 rows (two n8 tiles).
static_assert(MOE_BM_SMALL == 16, "the stream kernels take 16-row items");
extern "C" __global__ void __launch_bounds__(STREAM_THREADS, STREAM_GATE_UP_CTAS) moe_gate_up_stream(const MoeGemmParams p) {
    moe_stream<2, STREAM_GATE_UP_WK, true, false>(p);
}
extern "C" __global__ void __launch_bounds__(STREAM_THREADS, STREAM_DOWN_CTAS) moe_down_stream(const MoeGemmParams p) { moe_stream<2, STREAM_DOWN_WK, false, false>(p); }
extern "C" __global__ void __launch_bounds__(STREAM_THREADS, STREAM_GATE_UP_FP8_CTAS) moe_gate_up_stream_fp8(const MoeGemmParams p) {
    moe_stream<2, STREAM_GATE_UP_WK, true, true>(p);
}
extern "C" __global__ void __launch_bounds__(STREAM_THREADS, STREAM_DOWN_FP8_CTAS) moe_down_stream_fp8(const MoeGemmParams p) { moe_stream<2, STREAM_DOWN_WK, false, true>(p); }

// The fp8 experts' 16-row items as tiles (moe_*_fp8_m16): the stream's math (weights as the
// MMA's A side, e4m3 widened to f16 in registers; the item's rows as B, bf16 -> f16; each thread
// feeding the MMAs the k it holds on both sides), but the weights and the item's x rows come
// through FP8_M16_STAGES cp.async stages in shared memory that the CTA's four warps share:
// each stage is 128 bytes of each of the CTA's FP8_M16_ROWS weight rows (16 KB: one fp8 scale
// block of k) and the item's 16 x rows over the same k. A stream warp reloads and reconverts the
// item's x for every 16 weight rows it takes, and its chunks in flight are bounded by its
// registers; here x is loaded once for 128 weight rows, and a stage's copies are in flight two
// stages ahead for the whole CTA.
// The shared expert (bf16: fp8 quantizes the routed experts only) comes among the items as
// expert p.shared_expert, and its CTAs run the same tile over bf16 weights (64 k a stage, bf16
// MMAs, no scales), where it would otherwise run beside as cuBLAS GEMMs.
// Warp w takes the CTA's weight rows 32w.. as two m16 row tiles a (gated: its 16 gate rows and
// the same 16 up rows, output columns n0 + 16w..; down: output columns n0 + 32w + 16a..).
// Shared memory, a stage: W [FP8_M16_ROWS][128 bytes], X [16][BK] bf16. A thread reads
// 16-byte pieces of two rows g, g + 1 apart in its quarter-warp, so W's 16-byte chunks are
// XOR-swizzled by (row & 1) << 2, and X's by (row & 1) (fp8: its two chunks of a piece are 32
// bytes apart) or (row & 1) << 2 (bf16): conflict-free.
template <bool GATED, bool FP8>
__device__ __forceinline__ void moe_m16_tile(const MoeGemmParams& p, const TileItem& it, int n0, const unsigned char* w1,
                                             const unsigned char* w2) {
    const int e = it.e, s0 = it.s0, rows = it.rows;
    constexpr int EB = FP8 ? 1 : 2, BK = 128 / EB, ST = FP8_M16_STAGES, ROWS = FP8_M16_ROWS, NT = MOE_BM_SMALL / 8;
    constexpr int W_BYTES = ROWS * 128, XCH = BK * 2 / 16;  // x's 16-byte chunks a row a stage
    static_assert(FP8_M16_STAGE_BYTES >= W_BYTES + MOE_BM_SMALL * BK * 2, "params.h's stage");
    static_assert(ROWS == 4 * 32 && MOE_WG_THREADS == 128, "four warps of two m16 row tiles");
    static_assert(!FP8 || BK == FP8_BLOCK, "an fp8 stage is one scale block of k");
    const int tid = threadIdx.x, warp = tid / WARP, lane = tid % WARP, g = lane / 4, t = lane % 4;
    extern __shared__ __align__(16) unsigned char tiles[];
    auto wtile = [&](int s) { return tiles + s * FP8_M16_STAGE_BYTES; };
    auto xtile = [&](int s) { return tiles + s * FP8_M16_STAGE_BYTES + W_BYTES; };
    auto xchunk = [](int xr, int c) { return FP8 ? c ^ (xr & 1) : c ^ ((xr & 1) << 2); };

    // Copies: weight chunk (row R, 16-byte chunk c) for R = tid / 8 + 16 q, c = tid % 8; x chunk
    // (row xr, 16-byte chunk xc) for xr = tid / XCH + (128 / XCH) q, xc = tid % XCH.
    // CTA weight row R: warp R / 32, tile a = (R / 16) % 2, row R % 16 of it.
    auto weight_row = [&](int R) -> const unsigned char* {
        const int w = R / 32, a = (R / 16) % 2, r = R % 16;
        const int n = GATED ? n0 + 16 * w + r : n0 + R;
        const unsigned char* m = GATED && a == 1 ? w2 : w1;
        return n < p.n ? m + (size_t)n * p.k * EB : nullptr;
    };
    const int wc = tid % 8, xc = tid % XCH;
    auto copy_w = [&](int s, int k0) {
        unsigned char* W = wtile(s);
        const int kk = k0 + wc * (16 / EB);
#pragma unroll
        for (int q = 0; q < ROWS / 16; q++) {
            const int R = tid / 8 + 16 * q;
            const unsigned char* src = weight_row(R);
            const bool ok = kk < p.k && src;
            cp_async16(W + R * 128 + ((wc ^ ((R & 1) << 2)) * 16), ok ? src + (size_t)kk * EB : w1, ok);
        }
    };
    constexpr int XQ = MOE_BM_SMALL * XCH / MOE_WG_THREADS;  // x chunks a thread copies
    const bf16* xsrc[XQ];
#pragma unroll
    for (int q = 0; q < XQ; q++) {
        const int xr = tid / XCH + (MOE_WG_THREADS / XCH) * q;
        xsrc[q] = xr < rows ? p.x + (size_t)(GATED ? p.slot_token[s0 + xr] : s0 + xr) * p.k : nullptr;
    }
    auto copy_x = [&](int s, int k0) {
        unsigned char* X = xtile(s);
        const bool kin = k0 + 8 * xc < p.k;
#pragma unroll
        for (int q = 0; q < XQ; q++) {
            const int xr = tid / XCH + (MOE_WG_THREADS / XCH) * q;
            const bool ok = kin && xsrc[q];
            cp_async16(X + xr * BK * 2 + xchunk(xr, xc) * 16, ok ? xsrc[q] + k0 + 8 * xc : p.x, ok);
        }
    };

    const int ktiles = (p.k + BK - 1) / BK;
    // Down, gate_up's programmatic dependent: its first stages' weights come before the wait for
    // its item's act rows (as the stream's and the one-warpgroup tiles' do), which waits for the
    // item's gate_up CTAs alone where they count themselves (item_done_wait).
    if constexpr (!GATED) {
#pragma unroll
        for (int s = 0; s < ST - 1; s++)
            if (s < ktiles) copy_w(s, s * BK);
        item_done_wait(p, it);
    }
#pragma unroll
    for (int s = 0; s < ST - 1; s++) {
        if (s < ktiles) {
            if constexpr (GATED) copy_w(s, s * BK);
            copy_x(s, s * BK);
        }
        cp_async_commit();
    }

    // fp8: this CTA's scale blocks (its weight rows lie in one 128-row block: n0 is a multiple of
    // the CTA's columns, 64 or 128).
    const int scols = (p.k + FP8_BLOCK - 1) / FP8_BLOCK;
    const size_t srow = ((size_t)e * ((p.n + FP8_BLOCK - 1) / FP8_BLOCK) + n0 / FP8_BLOCK) * scols;
    const int nt_live = (rows + 7) / 8;  // n8 tiles of the item's rows (warp-uniform)
    float acc[2][NT][4] = {};

    for (int kt = 0; kt < ktiles; kt++) {
        cp_async_wait<ST - 2>();
        __syncthreads();  // stage kt landed for every thread; every thread is past stage kt - 1
        if (kt + ST - 1 < ktiles) {
            copy_w((kt + ST - 1) % ST, (kt + ST - 1) * BK);
            copy_x((kt + ST - 1) % ST, (kt + ST - 1) * BK);
        }
        cp_async_commit();
        const unsigned char* W = wtile(kt % ST);
        const unsigned char* X = xtile(kt % ST);
        // fp8: the stage's scales, loaded before its products (loaded after them, each stage
        // waited out the load: the sm_90a SASS).
        float s1 = 0.f, s2 = 0.f;
        if constexpr (FP8) {
            s1 = p.w1_scale[srow + kt];
            s2 = GATED ? p.w2_scale[srow + kt] : s1;
        }
        // fp8: the stage's products go to st and are scaled into acc; bf16: into acc directly.
        float st[2][NT][4] = {};
        float(&sum)[2][NT][4] = FP8 ? st : acc;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            // Piece i: 16 bytes from byte 16 (t + 4i) of rows g, g + 8 of both row tiles (16 fp8
            // codes or 8 bf16 values); x the same k of the item's rows g + 8j (fp8: as f16 pairs).
            const int wchunk = (t + 4 * i) ^ ((g & 1) << 2);
            uint4 wv[2][2];
#pragma unroll
            for (int a = 0; a < 2; a++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int R = 32 * warp + 16 * a + g + 8 * h;
                    wv[a][h] = *reinterpret_cast<const uint4*>(W + R * 128 + wchunk * 16);
                }
            uint32_t xb[NT][8 / EB];
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int xr = 8 * j + g;
                const unsigned char* xrow = X + xr * BK * 2;
                if constexpr (FP8) {
                    const uint4 lo = *reinterpret_cast<const uint4*>(xrow + xchunk(xr, 2 * (t + 4 * i)) * 16);
                    const uint4 hi = *reinterpret_cast<const uint4*>(xrow + xchunk(xr, 2 * (t + 4 * i) + 1) * 16);
                    const uint32_t v[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
                    for (int q = 0; q < 8; q++) xb[j][q] = bf16x2_to_f16x2(v[q]);
                } else {
                    const uint4 v = *reinterpret_cast<const uint4*>(xrow + xchunk(xr, t + 4 * i) * 16);
                    xb[j][0] = v.x, xb[j][1] = v.y, xb[j][2] = v.z, xb[j][3] = v.w;
                }
            }
            // fp8: word m of a piece holds MMA m's 4 codes; bf16: words 2m, 2m + 1 its 4 values.
#pragma unroll
            for (int m = 0; m < (FP8 ? 4 : 2); m++) {
#pragma unroll
                for (int a = 0; a < 2; a++) {
                    const uint32_t* v0 = reinterpret_cast<const uint32_t*>(&wv[a][0]);
                    const uint32_t* v1 = reinterpret_cast<const uint32_t*>(&wv[a][1]);
                    uint32_t a0, a1, a2, a3;
                    if constexpr (FP8) {
                        a0 = e4m3x2_to_f16x2(v0[m], false), a1 = e4m3x2_to_f16x2(v1[m], false);
                        a2 = e4m3x2_to_f16x2(v0[m], true), a3 = e4m3x2_to_f16x2(v1[m], true);
                    } else {
                        a0 = v0[2 * m], a1 = v1[2 * m], a2 = v0[2 * m + 1], a3 = v1[2 * m + 1];
                    }
#pragma unroll
                    for (int j = 0; j < NT; j++) {
                        if (j >= nt_live) break;
                        if constexpr (FP8) {
                            mma_f16_16816(sum[a][j], a0, a1, a2, a3, xb[j][2 * m], xb[j][2 * m + 1]);
                        } else {
                            mma_bf16_16816(sum[a][j], a0, a1, a2, a3, xb[j][2 * m], xb[j][2 * m + 1]);
                        }
                    }
                }
            }
        }
        if constexpr (FP8) {
            const float u1 = s1 * FP8_CODE_UNSCALE;
            const float u2 = GATED ? s2 * FP8_CODE_UNSCALE : u1;
#pragma unroll
            for (int a = 0; a < 2; a++)
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int c = 0; c < 4; c++) acc[a][j][c] += (GATED && a == 1 ? u2 : u1) * st[a][j][c];
        }
    }
    cp_async_wait<0>();  // the trailing groups are empty; no copy outlives the CTA

    // C element c of tile (a, j): weight row g + 8 (c / 2) of row tile a, item row 8j + 2t + c % 2.
    float wts[NT][2] = {};
    if constexpr (!GATED) load_n_row_weights(p, s0, rows, wts);
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const int r = 8 * j + 2 * t + c % 2;
            if (r >= rows) continue;
            const size_t slot = s0 + r;
            if constexpr (GATED) {
                const int col = n0 + 16 * warp + g + 8 * (c / 2);
                if (col < p.n) p.act_out[slot * p.n + col] = f2bf(silu_f(acc[0][j][c]) * acc[1][j][c]);
            } else {
                const float wt = wts[j][c % 2];
#pragma unroll
                for (int a = 0; a < 2; a++) {
                    const int col = n0 + 32 * warp + 16 * a + g + 8 * (c / 2);
                    if (col < p.n) p.slot_out[slot * p.n + col] = f2bf(acc[a][j][c] * wt);
                }
            }
        }
}

template <bool GATED>
__device__ __forceinline__ void moe_fp8_m16(const MoeGemmParams& p) {
    // gate_up: as the tiles' gate_up (moe_gemm_bf16), a no-op when launched plainly.
    if constexpr (GATED) {
        pdl_wait();
        pdl_release();
    }
    const TileItem it = tile_item(p);
    if (!it.live) return;
    const int n0 = blockIdx.x * (GATED ? FP8_M16_GATE_UP_COLS : FP8_M16_DOWN_COLS);
    if (it.e == p.shared_expert) {
        const auto* w1 = reinterpret_cast<const unsigned char*>(p.shared_w1);
        moe_m16_tile<GATED, false>(p, it, n0, w1, GATED ? reinterpret_cast<const unsigned char*>(p.shared_w2) : w1);
    } else {
        const size_t wstride = (size_t)p.n * p.k;  // codes an expert
        const uint8_t* w1 = p.w1_fp8 + it.e * wstride;
        moe_m16_tile<GATED, true>(p, it, n0, w1, GATED ? p.w2_fp8 + it.e * wstride : w1);
    }
    if constexpr (GATED) item_done_signal(p, it);
}
extern "C" __global__ void __launch_bounds__(MOE_WG_THREADS, FP8_M16_CTAS) moe_gate_up_fp8_m16(const MoeGemmParams p) { moe_fp8_m16<true>(p); }
extern "C" __global__ void __launch_bounds__(MOE_WG_THREADS, FP8_M16_CTAS) moe_down_fp8_m16(const MoeGemmParams p) { moe_fp8_m16<false>(p); }
