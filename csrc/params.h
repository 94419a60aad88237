// The one definition of what crosses the FFI: every kernel's launch-parameter struct, the tile
// constants and launch block sizes the host needs, and the dynamic shared-memory sizes.
// build.rs runs bindgen over this file (with DLLM_BINDGEN defined) for the #[repr(C)] Rust
// mirror: `#define` integers become Rust consts, `constexpr` values are evaluated by clang, and
// both the Rust and the nvcc side assert the structs' sizes and field offsets (build.rs).
#pragma once
#include <stdint.h>

#ifdef DLLM_BINDGEN
// bindgen needs no CUDA headers: a bf16 is only ever behind a device address here.
#define DLLM_HD
// The Rust launch layer passes raw device addresses, never host pointers: u64 there.
#define DEV_PTR(T) uint64_t
#else
#include <cuda_bf16.h>
typedef __nv_bfloat16 bf16;
#define DLLM_HD __host__ __device__
#define DEV_PTR(T) T*
#endif

// ---- launch shapes shared with the host ---------------------------------------------------

#define WARP 32

// attention.cu: a CTA is 8 warps, each owning 16 query rows (one m16n8k16 row tile), so a tile
// is ATT_ROWS rows; keys go in chunks of ATT_KC (ATT_KC_WIDE for head dims above 128, see
// att_kc) through ATT_STAGES cp.async stages. The kernel's ~220 registers a thread leave room
// for 8 warps an SM either way: 128-row tiles (one CTA an SM) stage each K/V chunk once for a
// whole 32-token block of mini's 4-head groups where 64-row tiles (two) staged it twice (mini,
// H200: 2.29 -> 1.99 ms a step at batch 64, 0.71 -> 0.64 at 16, 0.25 -> 0.28 at 1). Shared-
// memory rows are ATT_PAD bf16 longer than the head dim: consecutive rows then start 16 bytes
// apart modulo 128, so the 8 row reads of an ldmatrix hit distinct banks.
#define ATT_THREADS 256
#define ATT_COMBINE_WARPS 8  // attention_combine: warps a CTA (p.combine_warps of them a row)
#define ATT_ROWS 128
#define ATT_KC 64
#define ATT_KC_WIDE 32
#define ATT_STAGES 2
#define ATT_CTAS_PER_SM 1  // __launch_bounds__ of the three kernels; the host sizes key splits by it
#define ATT_WGMMA_STAGES 2  // block_attention on sm_90a: its own cp.async stages (att_wgmma_smem)
#define ATT_WGMMA_CTAS_PER_SM 2  // block_attention on sm_90a (wgmma, head dim 128): ~124 registers, ~97 KB; the split rule still counts an SM once
// block_attention_deep (sm_90a, head dim 128): one CTA an SM of ATT_DEEP_THREADS threads, two
// consumer warpgroups and a producer one, with ATT_DEEP_STAGES stages and their mbarriers, for a
// step whose CTAs all fit one wave at one an SM (batch 1 at any context, batch 16 at 1k).
#define ATT_DEEP_THREADS 384
#define ATT_DEEP_STAGES 5
// Its K/V by TMA needs whole boxes of at least this many positions (a page, or ATT_KC of one):
// a box lands at a multiple of 1024 bytes of its 128-byte-swizzled panel, and a chunk of
// ATT_KC / 8 boxes a panel is already 32 TMA copies. Smaller or uneven pages take cp.async.
#define ATT_TMA_MIN_BOX_ROWS 8
#define ATT_PAD 8

// moe_gemm.cu: BN output columns per CTA, BK of k per stage, rows padded to spread banks;
// a work item has MOE_BM_LARGE rows (MOE_BM_SMALL ones go to moe_stream.cu).
#define GEMM_THREADS 128
#define GEMM_BN 64
#define GEMM_BK 64
#define GEMM_LDS (GEMM_BK + 8)
#define MOE_BM_SMALL 16
#define MOE_BM_LARGE 64
#define MOE_BM_XLARGE 128  // bf16 on sm_90a only: the warpgroup's wgmmas over two 64-row halves
#define MOE_BM_XXLARGE 192  // gate_up's warp-specialized units over 128-row items (moe_gemm.cu: ws_unit_rows)
// moe_gemm.cu's bf16 tiles: a warpgroup (MOE_WG_THREADS, 4 warps) a CTA; on the mma.sync path
// each warp takes 32 weight rows, so a CTA streams MOE_MMA_WROWS weight rows (gated: 64 gate +
// 64 up) through MOE_MMA_STAGES cp.async stages of GEMM_BK; its output columns (gated: half its
// weight rows).
#define MOE_WG_THREADS 128
#define MOE_MMA_WROWS 128
#define MOE_MMA_STAGES 4
#define MOE_MMA_GATE_UP_COLS (MOE_MMA_WROWS / 2)
#define MOE_MMA_DOWN_COLS MOE_MMA_WROWS
// The shared expert joins the routed experts' items (moe.rs: the stream kernels' or the bf16
// tiles') up to this many items (each reads its weights again); past it, it runs beside them on
// the side stream. 4 took batch 8 (four 64-row items): 6.08 against 6.26 ms a step with 2, three
// runs each (docs/PERF.md, session 12, where 8 left batch 16 level). 8 takes batch 16 (eight
// 64-row items) since its gate_up became moe_permute's programmatic dependent, which it is only
// with nothing beside it: 7.48 against 7.71 ms a step, three runs each (session 30). The
// warp-specialized tiles take it at any number of items (their units of one expert run one after
// the other, so its weights come from DRAM once): batch 64 13.79 against 13.95 ms, 128 25.09
// against 25.24, three runs each (session 36).
#define SHARED_STREAM_MAX_ITEMS 8
// moe_stream.cu (items of MOE_BM_SMALL rows): STREAM_WARPS warps a CTA. gate_up splits k over
// them (16 weight rows a CTA); down gives each its own 16 rows (64 a CTA).
#define STREAM_WARPS 4
#define STREAM_THREADS (STREAM_WARPS * WARP)
#define STREAM_GATE_UP_ROWS 16
#define STREAM_DOWN_ROWS (16 * STREAM_WARPS)
// The warps of a CTA that split k (each taking every WK-th chunk): gate_up all, down one.
#define STREAM_GATE_UP_WK (STREAM_WARPS * 16 / STREAM_GATE_UP_ROWS)
#define STREAM_DOWN_WK (STREAM_WARPS * 16 / STREAM_DOWN_ROWS)
// CTAs an SM the register budget is capped for (the weights in flight live in registers).
#define STREAM_GATE_UP_CTAS 4
#define STREAM_DOWN_CTAS 6
#define STREAM_GATE_UP_FP8_CTAS 3
#define STREAM_DOWN_FP8_CTAS 4
// k a warp multiplies per chunk: 64 bf16 or 128 e4m3 codes, one 128-byte line of a weight row.
#define STREAM_CHUNK_BF16 64
#define STREAM_CHUNK_FP8 128
// The gate_up streams' L2 hints (MoeGemmParams::prefetch_ahead): STREAM_PREFETCH_AHEAD of a
// warp's chunks ahead, where a warp walks at least STREAM_PREFETCH_MIN_CHUNKS of them (k split
// over the CTA's warps). One H200, fp8 experts at batch 1: flash's k of 4096 (8 chunks a warp)
// streamed 4.8% faster with 2 ahead (slower with 4); mini's 2048 (4 a warp) made its step
// 1.5-2% slower; the down streams (one warp a row range) measured level (docs/PERF.md).
#define STREAM_PREFETCH_AHEAD 2
#define STREAM_PREFETCH_MIN_CHUNKS 8
// The down streams launched as gate_up's programmatic dependents (CudaOptions::expert_pdl): a
// warp's first STREAM_PDL_AHEAD chunks are requested (one loaded, the rest hinted into L2) before
// it waits for gate_up's end.
#define STREAM_PDL_AHEAD 4
// dense_stream.cu: a dense projection of at most DENSE_STREAM_ROWS rows (a batch-1 step's block)
// at few rows. A CTA is DENSE_STREAM_WARPS warps of 16 weight rows each (DENSE_STREAM_COLS output
// columns) over one of DENSE_STREAM_CLUSTER k ranges (a thread block cluster adds them), holding
// its weight tile and x over its range in shared memory, rows DENSE_STREAM_PAD bf16 longer than
// the range (16 bytes: a row is then an odd number of 16-byte units, so ldmatrix's eight row
// reads fall in different banks); a range is a multiple of DENSE_STREAM_KC, at most
// DENSE_STREAM_MAX_KR. The host takes cuBLAS where a CTA's shared memory would pass
// DENSE_STREAM_MAX_SMEM: DENSE_STREAM_CTAS CTAs an SM (QKV at mini: 384 CTAs, 48 clusters of 8;
// at three an SM only 45 clusters fit at once, ncu). The partial sums' rows are
// DENSE_STREAM_RED_LD floats apart (8-byte stores, a half-warp's in different banks), over the
// weight tile, which they fit at the shortest range.
#define DENSE_STREAM_ROWS 32
#define DENSE_STREAM_WARPS 4
#define DENSE_STREAM_THREADS (DENSE_STREAM_WARPS * WARP)
#define DENSE_STREAM_COLS (16 * DENSE_STREAM_WARPS)
#define DENSE_STREAM_CLUSTER 8
#define DENSE_STREAM_KC 64
#define DENSE_STREAM_MAX_KR 1024
#define DENSE_STREAM_PAD 8
#define DENSE_STREAM_CTAS 4
#define DENSE_STREAM_MAX_SMEM (56 * 1024)
#define DENSE_STREAM_RED_LD (DENSE_STREAM_COLS + 8)
static_assert(DENSE_STREAM_ROWS * DENSE_STREAM_RED_LD * 4 <= DENSE_STREAM_COLS * (DENSE_STREAM_KC + DENSE_STREAM_PAD) * 2,
              "the partial sums fit over the weight tile");
// Block FP8 (quantize_fp8.cu, the fp8 moe_gemm): one f32 scale per FP8_BLOCK x FP8_BLOCK weight
// block; FP8_MAX is e4m3's largest finite value (a block's amax maps onto it). GEMM_BN and
// GEMM_BK divide FP8_BLOCK, so a stage's weight tile lies in one scale block.
#define FP8_BLOCK 128
#define FP8_MAX 448.0f
#define QUANT_THREADS 256
// The fp8 tiles of 16-row items (moe_stream.cu, moe_*_fp8_m16): a CTA of FP8_M16_ROWS weight
// rows (gated: half gate, half up) streams them with the item's x rows through FP8_M16_STAGES
// cp.async stages of one fp8 scale block of k each (FP8_BLOCK codes: 16 KB of weights a stage,
// the bytes a bf16 wgmma tile's stage brings), FP8_M16_CTAS CTAs an SM.
#define FP8_M16_ROWS 128
#define FP8_M16_STAGES 3
#define FP8_M16_CTAS 3
#define FP8_M16_GATE_UP_COLS (FP8_M16_ROWS / 2)
#define FP8_M16_DOWN_COLS FP8_M16_ROWS
static constexpr uint32_t FP8_M16_STAGE_BYTES = FP8_M16_ROWS * FP8_BLOCK + MOE_BM_SMALL * FP8_BLOCK * 2;
static constexpr uint32_t FP8_M16_SMEM = FP8_M16_STAGES * FP8_M16_STAGE_BYTES;

// norm.cu: the values a thread keeps in registers between its two passes, and the threads a
// row: cols / NORM_CACHE rounded up to whole warps, at least NORM_MIN_THREADS and at most
// NORM_MAX_THREADS (CudaBackend::add_rms_norm), so every column of a row up to 8,192 stays in
// registers. 16 values a thread at 256 threads took 70 registers: three CTAs an SM, and the norms
// of a 4,096-token prefill ran at 58% of the DRAM bandwidth (docs/PERF.md, session 32).
#define NORM_CACHE 8
#define NORM_MIN_THREADS 128
#define NORM_MAX_THREADS 1024
#define NORM_SLOT_ROUND 3  // add_moe_rms_norm's slot rows in flight a thread (within 64 registers: 4 spilled)
// add_moe_rms_norm: a thread's group of columns (one 16-byte load of bf16 a slot); a divisor of
// NORM_CACHE and of every hidden size the CUDA backend loads.
#define MOE_NORM_COLS 8

// rope.cu: one warp per head at a time, ROPE_WARPS heads a CTA; head_dim up to ROPE_MAX_D.
#define ROPE_WARPS 4
#define ROPE_THREADS (ROPE_WARPS * WARP)
#define ROPE_MAX_D 256
#define ROPE_CTAS_PER_SM 16  // an SM's 2048 threads: the host sizes the grid by it
// qk_norm_rope_store_v4 / _v8 (head dims 128 / 256): a lane's head elements as one vector; a
// warp issues the loads of this many of its heads before it works on the first.
#define ROPE_VEC_HEADS 4

// moe_router.cu, moe_permute.cu, lm_head.cu, unmask.cu.
#define ROUTER_THREADS 256
#define ROUTER_SELECT_MAX_WARPS 16  // moe_router_select: tokens (a warp each) a CTA at most, which counts its picks at once
#define ROUTER_SELECT_WIDE_WARPS 4  // moe_router_select_wide: tokens a CTA (two 4 KB score rows a warp)
#define ROUTER_MAX_E 1024
#define ROUTER_MAX_GROUPS 64
#define PERMUTE_THREADS 1024
#define PERMUTE_MAX_E 1024
// moe_route.cu: the router in one launch at few rows (logits, selection and, for one
// cluster's rows, the permute). A cluster of ROUTE_CLUSTER CTAs takes ROUTE_ROWS rows, CTA r the
// GEMM_BK-wide k chunks r, r + ROUTE_CLUSTER, ... of the logits for all experts (<= ROUTE_MAX_E,
// one a thread in the selection) through ROUTE_STAGES cp.async stages; the partial logits meet
// through distributed shared memory.
#define ROUTE_CLUSTER 8
#define ROUTE_CLUSTER_WIDE 16  // moe_route_wide: one cluster's rows (<= ROUTE_ROWS) over 16 CTAs (non-portable)
#define ROUTE_THREADS 256
#define ROUTE_ROWS 32
#define ROUTE_MAX_E 256
#define ROUTE_STAGES 4
#define PICK_THREADS 512
#define PICK_UNROLL 8  // lm_head.cu: logits loads in flight a thread
#define UNMASK_MAX_BLOCK 1024

// ---- dynamic shared memory ------------------------------------------------------------------

// attention.cu: keys a chunk for the kernel of head dim D (64, 128 or 256): 256 takes half the
// chunk, so that its stages fit twice an SM (and once on sm_80's 163 KB) and its S
// accumulators leave room for O's 128 registers a thread.
constexpr DLLM_HD int att_kc(int d) { return d > 128 ? ATT_KC_WIDE : ATT_KC; }
// Byte offsets of the regions, 128-aligned (ldmatrix and cp.async need 16).
struct AttSmem {
    int q, kv, total;
};
constexpr DLLM_HD int att_align(int x) { return (x + 127) & ~127; }
constexpr DLLM_HD AttSmem att_smem_layout(int d) {
    const int ld = d + ATT_PAD;
    AttSmem L{};
    int off = 0;
    L.q = off;    off += att_align(ATT_ROWS * ld * 2);                       // Q, bf16 [ATT_ROWS][ld]
    L.kv = off;   off += att_align(ATT_STAGES * 2 * att_kc(d) * ld * 2);     // ATT_STAGES x (K, V), bf16 [kc][ld] each
    L.total = off;
    return L;
}
// What the three kernels are launched with.
static constexpr uint32_t ATT_SMEM_D64 = att_smem_layout(64).total;
constexpr DLLM_HD int att_wgmma_smem(int stages) { return 1024 + ATT_ROWS * 128 * 2 + stages * 2 * ATT_KC * 128 * 2; }
static constexpr uint32_t ATT_SMEM_D128 =
    att_smem_layout(128).total > att_wgmma_smem(ATT_WGMMA_STAGES) ? att_smem_layout(128).total : att_wgmma_smem(ATT_WGMMA_STAGES);
static constexpr uint32_t ATT_SMEM_DEEP = att_wgmma_smem(ATT_DEEP_STAGES) + 2 * ATT_DEEP_STAGES * 8;  // + the full and empty mbarriers
static constexpr uint32_t ATT_SMEM_D256 = att_smem_layout(256).total;
static_assert(ATT_WGMMA_CTAS_PER_SM * (ATT_SMEM_D128 + 1024) <= 228 * 1024, "block_attention's wgmma CTAs must share an SM");
static_assert(ATT_SMEM_DEEP <= 227 * 1024, "block_attention_deep's stages must fit one CTA's shared memory");
// ATT_CTAS_PER_SM of the largest fit in an sm_90 SM's 228 KB (1 KB of it reserved a CTA).
static_assert(ATT_CTAS_PER_SM * (ATT_SMEM_D128 + 1024) <= 228 * 1024 && ATT_CTAS_PER_SM * (ATT_SMEM_D256 + 1024) <= 228 * 1024,
              "block_attention's shared memory must let ATT_CTAS_PER_SM CTAs share an SM");

// moe_gemm.cu: two stages of (x [BM][LDS], w1 [BN][LDS], w2 [BN][LDS] if gated), bf16; the fp32
// epilogue tiles reuse them.
constexpr DLLM_HD int moe_gemm_stage_bytes(int bm, bool gated) { return (bm * GEMM_LDS + GEMM_BN * GEMM_LDS * (gated ? 2 : 1)) * 2; }
constexpr DLLM_HD int moe_gemm_smem_bytes(int bm, bool gated) {
    return 2 * moe_gemm_stage_bytes(bm, gated) > bm * (GEMM_BN + 4) * 4 * (gated ? 2 : 1) ? 2 * moe_gemm_stage_bytes(bm, gated)
                                                                                         : bm * (GEMM_BN + 4) * 4 * (gated ? 2 : 1);
}
// The fp8 variant: two stages of (x bf16 [BM][LDS], w1 fp8 [BN][BK], w2 fp8 [BN][BK] if gated)
// as cp.async brings them, then one bf16 copy of the weight tiles ([BN][LDS] each) that the
// MMA reads, converted from the stage; the fp32 epilogue tiles reuse them all. Every region
// is a multiple of 128 bytes, so the WMMA pointers are 32-byte aligned.
constexpr DLLM_HD int moe_gemm_fp8_stage_bytes(int bm, bool gated) { return bm * GEMM_LDS * 2 + GEMM_BN * GEMM_BK * (gated ? 2 : 1); }
constexpr DLLM_HD int moe_gemm_fp8_smem_bytes(int bm, bool gated) {
    return 2 * moe_gemm_fp8_stage_bytes(bm, gated) + GEMM_BN * GEMM_LDS * 2 * (gated ? 2 : 1) > bm * (GEMM_BN + 4) * 4 * (gated ? 2 : 1)
               ? 2 * moe_gemm_fp8_stage_bytes(bm, gated) + GEMM_BN * GEMM_LDS * 2 * (gated ? 2 : 1)
               : bm * (GEMM_BN + 4) * 4 * (gated ? 2 : 1);
}
static_assert(FP8_BLOCK % GEMM_BN == 0 && FP8_BLOCK % GEMM_BK == 0, "a GEMM stage's weight tile must lie in one fp8 scale block");
// The bf16 tiles (moe_gemm.cu) of `bm` rows, one warpgroup a CTA: their cp.async stages as the
// launch sizes them (128-row items take 3, so two CTAs still share an SM; the wgmma tiles' own
// count is below); on the mma.sync path (64 rows only) a stage is
// (x [bm][LDS], weights [MOE_MMA_WROWS][LDS]); on sm_90a (wgmma) the x tile then the weight tile,
// rows of GEMM_BK bf16 (128 bytes, swizzled, unpadded), the stages 1024-byte aligned (1 KB of
// slack). The epilogue writes from registers. Launched with the larger.
constexpr DLLM_HD int moe_tiles_stages(int bm) { return bm > MOE_BM_LARGE ? 3 : MOE_MMA_STAGES; }
constexpr DLLM_HD int moe_mma_stage_bytes(int bm) { return (bm + MOE_MMA_WROWS) * GEMM_LDS * 2; }
constexpr DLLM_HD int moe_wgmma_x_bytes(int bm) { return bm * GEMM_BK * 2; }
constexpr DLLM_HD int moe_wgmma_stage_bytes(int bm) { return (bm + MOE_MMA_WROWS) * GEMM_BK * 2; }
constexpr DLLM_HD int moe_bf16_tiles_smem(int bm) {
    return moe_tiles_stages(bm) * moe_mma_stage_bytes(bm) > moe_tiles_stages(bm) * moe_wgmma_stage_bytes(bm) + 1024
               ? moe_tiles_stages(bm) * moe_mma_stage_bytes(bm)
               : moe_tiles_stages(bm) * moe_wgmma_stage_bytes(bm) + 1024;
}
static constexpr uint32_t MOE_TILES_THREADS = MOE_WG_THREADS;
static constexpr uint32_t MOE_TILES_M64_SMEM = moe_bf16_tiles_smem(MOE_BM_LARGE);
static constexpr uint32_t MOE_TILES_M128_SMEM = moe_bf16_tiles_smem(MOE_BM_XLARGE);
// On sm_90a (wgmma) both item sizes take 3 stages of the unpadded layout: two 128-row CTAs or
// three 64-row CTAs share an SM, and the 64-row ones launch with only what that layout needs.
// With 4 stages and two an SM, a batch-1 step's 648 gate_up CTAs ran 2.45 waves; with 3 and
// three an SM, 1.6, and steps from batch 1 to 32 ran 1.5-1.8% faster (docs/PERF.md, session 31).
constexpr DLLM_HD int moe_wgmma_tiles_stages(int) { return 3; }
static constexpr uint32_t MOE_TILES_M64_WGMMA_SMEM = moe_wgmma_tiles_stages(MOE_BM_LARGE) * moe_wgmma_stage_bytes(MOE_BM_LARGE) + 1024;
static_assert(3 * (MOE_TILES_M64_WGMMA_SMEM + 1024) <= 228 * 1024, "three CTAs of the 64-row wgmma tiles must share an SM");
static_assert(2 * (MOE_TILES_M128_SMEM + 1024) <= 228 * 1024, "two CTAs of the 128-row bf16 tiles must share an SM");
static_assert(2 * (MOE_TILES_M64_SMEM + 1024) <= 228 * 1024, "two CTAs of the 64-row bf16 tiles must share an SM");
// The MoE item count's buffer: [count, gate_up's unit counter, down's, then one counter an item],
// all written by the permute (moe_items.cuh); the warp-specialized tiles take their units from
// the unit counters; the fp8 16-row tiles' gate_up CTAs count themselves done in their item's
// counter, which down's CTAs of that item wait for (MoeGemmParams::item_done; the one-warpgroup
// wgmma tiles too).
#define MOE_UNIT_COUNTERS 2
// The warp-specialized bf16 tiles (moe_gemm.cu's moe_gemm_ws, sm_90a): persistent, one CTA an
// SM of MOE_WS_WGS consumer warpgroups and MOE_WS_PRODUCER_WARPS producer warps. The consumers
// share one x tile and one tile of MOE_WS_WGS x MOE_MMA_WROWS weight rows (64-row items: each
// warpgroup the item by its own MOE_MMA_WROWS; 128-row items: each its 64 of the item's rows by
// all of them), so an item's x is read once per MOE_WS_WGS x MOE_MMA_WROWS weight rows (the L2,
// which every weight byte crosses twice, is what binds these GEMMs); the weights come by TMA in
// boxes of MOE_WS_BOX_ROWS rows. The
// stages fill what shared memory is left after their full and empty mbarriers. One producer warp
// could not issue a 128-row item's x copies fast enough (32 a lane a stage); four keep up. On one
// H200 they beat the one-warpgroup tiles at 128-row items (batch 128: gate_up 6.02 against 6.55 ms
// a step) and lost 2% at 64-row ones (docs/PERF.md, session 17), at drawn routing, where a few
// experts took most rows. At realistic routing (every expert's rows within ~3x the mean) they win
// at 64-row items too: steps at batch 1, 4 and 16 2.6-3.6% faster on an H100 (docs/PERF.md,
// session 47), so CudaBackend takes them for both.
#define MOE_WS_WGS 2
#define MOE_WS_BOX_ROWS 64
#define MOE_WS_PRODUCER_WARPS 4
static constexpr uint32_t MOE_WS_PRODUCERS = MOE_WS_PRODUCER_WARPS * WARP;
static constexpr uint32_t MOE_WS_THREADS = MOE_WS_WGS * MOE_WG_THREADS + MOE_WS_PRODUCERS;
#define MOE_WS_GATE_UP_COLS (MOE_WS_WGS * MOE_MMA_GATE_UP_COLS)
#define MOE_WS_DOWN_COLS (MOE_WS_WGS * MOE_MMA_DOWN_COLS)
constexpr DLLM_HD int moe_ws_stage_bytes(int bm) { return (bm + MOE_WS_WGS * MOE_MMA_WROWS) * GEMM_BK * 2; }
// A stage's bytes and its two mbarriers and unit slot (20 bytes), two more ints, 1 KB of alignment.
constexpr DLLM_HD int moe_ws_stages(int bm) { return (227 * 1024 - 1024 - 8) / (moe_ws_stage_bytes(bm) + 20); }
constexpr DLLM_HD int moe_ws_smem(int bm) { return moe_ws_stages(bm) * (moe_ws_stage_bytes(bm) + 20) + 8 + 1024; }
static constexpr uint32_t MOE_WS_M64_SMEM = moe_ws_smem(MOE_BM_LARGE);
static constexpr uint32_t MOE_WS_M128_SMEM = moe_ws_smem(MOE_BM_XLARGE);
static constexpr uint32_t MOE_WS_M192_SMEM = moe_ws_smem(MOE_BM_XXLARGE);
static_assert(moe_ws_stages(MOE_BM_XXLARGE) >= 3, "the 192-row tiles need stages in flight too");
// The 192-row tiles' registers a thread after setmaxnreg (launched at 65536 / MOE_WS_THREADS,
// rounded down to 8: 168): the producers keep 40, the consumers take what that frees (232), so
// the CTA still holds 64,512.
#define MOE_WS_M192_PRODUCER_REGS 40
#define MOE_WS_M192_CONSUMER_REGS 232
static_assert(MOE_WS_WGS * MOE_WG_THREADS * MOE_WS_M192_CONSUMER_REGS + MOE_WS_PRODUCERS * MOE_WS_M192_PRODUCER_REGS <=
                  MOE_WS_THREADS * (65536 / MOE_WS_THREADS / 8 * 8),
              "setmaxnreg moves registers between the warpgroups, it does not add any");
static_assert(moe_ws_stages(MOE_BM_XLARGE) >= 3, "the warp-specialized tiles need stages in flight beside the one each consumer holds");
// moe_route: ROUTE_STAGES stages of the rows' x tile and the experts' weight tile ([rows][GEMM_LDS]
// bf16 each), then the CTA's partial logits [ROUTE_ROWS][ROUTE_MAX_E] f32.
constexpr DLLM_HD int route_stage_bytes() { return (ROUTE_ROWS + ROUTE_MAX_E) * GEMM_LDS * 2; }
static constexpr uint32_t ROUTE_SMEM = ROUTE_STAGES * route_stage_bytes() + ROUTE_ROWS * ROUTE_MAX_E * 4;
static_assert(ROUTE_ROWS * (GEMM_BK / 8) == ROUTE_THREADS, "a thread copies one 16-byte piece of a stage's x tile");
static_assert(ROUTE_ROWS == 32 && ROUTE_MAX_E == ROUTE_THREADS && ROUTE_MAX_E == 8 * WARP,
              "two m16 row tiles; one expert a thread; a warp's 32 experts as four n8 tiles");
static constexpr uint32_t MOE_GATE_UP_M64_FP8_SMEM = moe_gemm_fp8_smem_bytes(MOE_BM_LARGE, true);
static constexpr uint32_t MOE_DOWN_M64_FP8_SMEM = moe_gemm_fp8_smem_bytes(MOE_BM_LARGE, false);
// The fp8 tiles on sm_90a: one widened bf16 weight tile (swizzled, [MOE_MMA_WROWS][GEMM_BK]),
// then MOE_MMA_STAGES stages of (x tile, swizzled bf16; the weights' e4m3 codes
// [MOE_MMA_WROWS][GEMM_BK]), 1 KB of slack for the 1024-byte alignment.
constexpr DLLM_HD int moe_wgmma_fp8_wide_bytes() { return MOE_MMA_WROWS * GEMM_BK * 2; }
constexpr DLLM_HD int moe_wgmma_fp8_stage_bytes() { return moe_wgmma_x_bytes(MOE_BM_LARGE) + MOE_MMA_WROWS * GEMM_BK; }
static constexpr uint32_t MOE_TILES_M64_FP8_SMEM = moe_wgmma_fp8_wide_bytes() + MOE_MMA_STAGES * moe_wgmma_fp8_stage_bytes() + 1024;
static_assert(2 * (MOE_TILES_M64_FP8_SMEM + 1024) <= 228 * 1024, "two CTAs of the fp8 wgmma tiles must share an SM");
static_assert(MOE_WG_THREADS == GEMM_THREADS, "the fp8 kernels launch one block size for both paths");
// The fp8 tiles with the codes in registers (moe_gemm.cu, moe_gemm_wgmma_fp8_ra; sm_90a): a stage
// is one whole scale block of k (FP8_BLOCK), the item's x rows (bf16, two swizzled 64-column
// panels) then the CTA's MOE_MMA_WROWS code rows, each padded by 16 bytes (FP8_RA_CODE_LD: a
// quarter-warp's 2-byte reads of eight rows fall in distinct banks); FP8_RA_STAGES of them, 1 KB
// of slack for the 1024-byte alignment. Two CTAs an SM.
#define FP8_RA_STAGES 3
#define FP8_RA_CODE_LD (FP8_BLOCK + 16)
constexpr DLLM_HD int moe_fp8_ra_x_bytes() { return MOE_BM_LARGE * FP8_BLOCK * 2; }
constexpr DLLM_HD int moe_fp8_ra_stage_bytes() { return moe_fp8_ra_x_bytes() + MOE_MMA_WROWS * FP8_RA_CODE_LD; }
static constexpr uint32_t MOE_TILES_M64_FP8_RA_SMEM = FP8_RA_STAGES * moe_fp8_ra_stage_bytes() + 1024;
static_assert(2 * (MOE_TILES_M64_FP8_RA_SMEM + 1024) <= 228 * 1024, "two CTAs of the fp8 register tiles must share an SM");
static_assert(moe_fp8_ra_x_bytes() % 1024 == 0 && moe_fp8_ra_stage_bytes() % 1024 == 0, "the stages' x panels start 1024-byte aligned");
// The W8A8 tiles (moe_gemm.cu, moe_gemm_wgmma_w8a8; sm_90a, CudaOptions::fp8_activations): the
// item's x rows as e4m3 codes too (quantize_rows_fp8), both operands of fp8 wgmma straight from the
// stage. A stage is one whole scale block of k (FP8_BLOCK codes: a 128-byte swizzled row, as a bf16
// stage's GEMM_BK), the x codes [MOE_BM_LARGE][FP8_BLOCK] then the weights' [MOE_MMA_WROWS][FP8_BLOCK];
// W8A8_STAGES of them, 1 KB of slack for the 1024-byte alignment. Two CTAs an SM.
#define W8A8_STAGES 4
constexpr DLLM_HD int moe_w8a8_x_bytes() { return MOE_BM_LARGE * FP8_BLOCK; }
constexpr DLLM_HD int moe_w8a8_stage_bytes() { return moe_w8a8_x_bytes() + MOE_MMA_WROWS * FP8_BLOCK; }
static constexpr uint32_t MOE_TILES_M64_W8A8_SMEM = W8A8_STAGES * moe_w8a8_stage_bytes() + 1024;
static_assert(2 * (MOE_TILES_M64_W8A8_SMEM + 1024) <= 228 * 1024, "two CTAs of the W8A8 tiles must share an SM");
static_assert(FP8_BLOCK == GEMM_BK * 2, "a W8A8 stage's code rows are a bf16 stage's 128-byte rows");
// quantize_rows_fp8 (quantize_fp8.cu): a warp a (row, group of FP8_BLOCK columns), QUANT_ROWS_WARPS
// warps a CTA.
#define QUANT_ROWS_WARPS 8

// ---- launch-parameter structs ---------------------------------------------------------------

// gather.cu: x[r] = float(table[tokens[r]])
struct EmbedParams {
    DEV_PTR(const bf16) table;
    DEV_PTR(const uint32_t) tokens;
    DEV_PTR(float) out;
    int32_t rows;
    int32_t cols;
    int32_t vocab;
};

// gather.cu: out[i] = src[rows[i]]
struct GatherParams {
    DEV_PTR(const float) src;
    DEV_PTR(const int32_t) rows;
    DEV_PTR(float) out;
    int32_t n;
    int32_t cols;
};

// norm.cu: x += delta (if any); out = bf16(RMSNorm(x) * w)
struct NormParams {
    DEV_PTR(float) x;
    DEV_PTR(const float) delta;
    DEV_PTR(const float) w;
    DEV_PTR(bf16) out;
    int32_t rows;
    int32_t cols;
    float eps;
    // add_moe_rms_norm only: the MoE layer's output still in its expert slots (moe_combine's
    // slot_out and tok_slot, topk slots a token); delta, when given, is the shared expert's y.
    int32_t topk;
    DEV_PTR(const bf16) slot_out;
    DEV_PTR(const int32_t) tok_slot;
    // add_rms_norm only, when non-null: zero_len ints that the next MoE layer's router counts
    // into, zeroed here so that no memset lies between this norm and the router.
    DEV_PTR(int32_t) zero;
    int32_t zero_len;
};

// The paged KV cache of one layer as rope.cu and attention.cu see it (flashinfer's paged_kv_t
// in spirit). The pool is [page][layer][k|v][page_size][nkv][d] bf16 (nkv and d are the
// kernels' own head geometry); token t's page table starts at page_table + tok_pt[t].
struct PagedKv {
    DEV_PTR(bf16) pool;
    DEV_PTR(const int32_t) page_table;
    DEV_PTR(const int32_t) tok_pt;
    int32_t page_size;
    int32_t layer;
    int32_t num_layers;
};

// rope.cu: per-head QK norm and RoPE; K and V into the pages.
struct RopeParams {
    // The QKV projection's rows: f32, or bf16 for the _bf16 kernels (cuBLAS writes them so where
    // the host asks for bf16 QKV: CudaOptions::qkv_bf16).
    DEV_PTR(const void) qkv;
    DEV_PTR(const float) q_norm;
    DEV_PTR(const float) k_norm;
    DEV_PTR(bf16) q_out;
    DEV_PTR(const int32_t) tok_pos;
    PagedKv kv;
    int32_t tokens;
    int32_t nh;
    int32_t nkv;
    int32_t d;
    int32_t rot;
    float eps;
    float theta;
    // [table_positions][rot / 2][cos, sin] (the host's backend::cpu::rope_cos_sin); positions
    // past the table are computed in the kernel, in f64 as well.
    DEV_PTR(const float) cos_sin;
    int32_t table_positions;
};

// The rope table's positions at most (mini: 32,768 positions x 32 pairs, 8 MB).
#define ROPE_TABLE_MAX_POSITIONS 131072

// attention.cu, block_attention: one CTA per (query tile, KV head, key
// split). A tile is up to ATT_ROWS query rows (tokens x the group of query heads of one KV head), all
// tokens of one run. With num_splits > 1 it writes unnormalised partials that
// attention_combine merges; with num_splits == 1 it writes out directly.
struct AttnParams {
    DEV_PTR(const bf16) q;
    DEV_PTR(bf16) out;
    DEV_PTR(const int32_t) tok_limit;
    DEV_PTR(const int32_t) tiles;
    DEV_PTR(float) part_acc;
    DEV_PTR(float) part_ml;
    PagedKv kv;  // read only here
    int32_t tokens;
    int32_t nh;
    int32_t nkv;
    int32_t d;
    // Keys a split covers, one value on the device: the step's CUDA graph replays at other
    // prefix lengths with the same grid, the host rewriting only this (see attention.rs).
    DEV_PTR(const int32_t) split_keys;
    int32_t num_splits;
    float scale;
    // block_attention_deep only: the pool's TMA tensor map (a CUtensorMap in device memory:
    // [page x layer x k|v][page_size][nkv * d] bf16 in boxes of kv_box_rows positions x 64
    // columns, CudaBackend::kv_tensor_map), or null: the producer copies by cp.async instead.
    // kv_box_rows = min(page_size, ATT_KC), a power of two >= ATT_TMA_MIN_BOX_ROWS.
    DEV_PTR(const void) kv_map;
    int32_t kv_box_rows;
    // attention_combine: warps an output row (a power of two dividing ATT_COMBINE_WARPS; 1 where
    // d is not a multiple of 4), by the split count (CudaBackend::attention_kernels).
    int32_t combine_warps;
};

// moe_router.cu, moe_router_select: one warp per token over logits[t][e] (fp32).
struct RouterParams {
    DEV_PTR(const float) logits;
    DEV_PTR(const float) bias;
    DEV_PTR(int32_t) topk_ids;
    DEV_PTR(float) topk_w;
    int32_t tokens;
    int32_t experts;
    int32_t topk;
    int32_t n_group;
    int32_t topk_group;
    float scale;
    // >= 0: every token also picks this expert (the shared expert run with the routed ones) with
    // weight 1, as its pick number topk; the rows of topk_ids / topk_w are then topk + 1 long.
    int32_t shared_expert;
    // Non-null (a forward, for moe_permute): counts[e] (zeroed before) counts expert e's picks,
    // and pick_pos[j] (as topk_ids) is pick j's place among them, taken by atomics.
    DEV_PTR(int32_t) counts;
    DEV_PTR(int32_t) pick_pos;
};

// moe_router.cu, moe_router_block: LLaDA2.2's block routing over routing blocks of `block`
// consecutive tokens (the last may be short), logits[t][e] (fp32); one CTA per token.
struct RouterBlockParams {
    DEV_PTR(const float) logits;
    DEV_PTR(const float) bias;
    DEV_PTR(int32_t) topk_ids;
    DEV_PTR(float) topk_w;
    int32_t tokens;
    int32_t experts;
    int32_t topk;
    int32_t capacity;
    int32_t block;
    float scale;
    // As RouterParams::shared_expert: >= 0 adds it as every token's last pick, weight 1.
    int32_t shared_expert;
    // Non-null (recording a forward's routing): each block's pool, [blocks][capacity] expert
    // ids in rank order, written by the block's first CTA.
    DEV_PTR(int32_t) pool_ids;    // As RouterParams::counts / pick_pos.
    DEV_PTR(int32_t) counts;
    DEV_PTR(int32_t) pick_pos;
};

// moe_route.cu: RouterParams' work from the rows' activations x [tokens][hidden] bf16
// and the router weight w [experts][hidden] bf16 (logits in f32: bf16 products summed in f32, the
// CPU twin's math in another order), a cluster of ROUTE_CLUSTER CTAs per ROUTE_ROWS rows. With
// slot_token set (one cluster: tokens <= ROUTE_ROWS) it also does moe_permute's work, its counts
// in the cluster's shared memory (counts and pick_pos are then unused); otherwise, with counts
// set, it counts for moe_permute as moe_router_select does.
struct RouteParams {
    // The selection's inputs and outputs, as moe_router_select takes them; `logits` is written
    // here (the kernel's own product of x and w).
    RouterParams sel;
    DEV_PTR(const bf16) x;
    DEV_PTR(const bf16) w;
    int32_t hidden;
    // One cluster: PermuteParams' outputs (its experts: experts, + 1 with the shared expert).
    DEV_PTR(int32_t) slot_token;
    DEV_PTR(float) slot_weight;
    DEV_PTR(int32_t) tok_slot;
    DEV_PTR(int32_t) items;
    DEV_PTR(int32_t) num_items;
    int32_t tile_m;
};

// moe_permute.cu: the (token, k) picks sorted by expert (a pick's slot: its expert's offset +
// its place, both from the router's counts), and the work list of (expert, first sorted slot,
// rows) items of at most tile_m rows for the grouped GEMMs.
struct PermuteParams {
    DEV_PTR(const int32_t) topk_ids;
    DEV_PTR(const float) topk_w;
    DEV_PTR(const int32_t) counts;
    DEV_PTR(const int32_t) pick_pos;
    DEV_PTR(int32_t) slot_token;
    DEV_PTR(float) slot_weight;
    DEV_PTR(int32_t) tok_slot;
    DEV_PTR(int32_t) items;
    DEV_PTR(int32_t) num_items;
    int32_t tokens;
    int32_t topk;
    int32_t experts;
    int32_t tile_m;
};

// moe_gemm.cu: grouped GEMM over the work list. gate_up: act[slot] = silu(x w1^T) * (x w2^T)
// with x = h[slot_token[slot]]; down: out[slot] = slot_weight[slot] * (act[slot] w1^T).
// Weights are [experts][n][k] bf16, row-major; the fp8 kernels read w1_fp8/w2_fp8 instead
// ([experts][n][k] e4m3) with their scales [experts][ceil(n/128)][ceil(k/128)] f32.
struct MoeGemmParams {
    DEV_PTR(const bf16) x;
    DEV_PTR(const bf16) w1;
    DEV_PTR(const bf16) w2;
    DEV_PTR(const uint8_t) w1_fp8;
    DEV_PTR(const uint8_t) w2_fp8;
    DEV_PTR(const float) w1_scale;
    DEV_PTR(const float) w2_scale;
    DEV_PTR(bf16) act_out;
    // down: each slot's output times its routing weight, rounded to bf16 (as SGLang's fused MoE
    // writes it); f32 doubled the bytes the down GEMM writes and moe_combine reads back.
    DEV_PTR(bf16) slot_out;
    DEV_PTR(const int32_t) slot_token;
    DEV_PTR(const float) slot_weight;
    DEV_PTR(const int32_t) items;
    DEV_PTR(const int32_t) num_items;
    // The shared expert as expert number `shared_expert` of the items (-1: none; the bf16
    // kernels and the fp8 16-row tiles, where it stays bf16): its weights (gate and up, or down),
    // which lie outside the experts' array.
    DEV_PTR(const bf16) shared_w1;
    DEV_PTR(const bf16) shared_w2;
    // The warp-specialized tiles (sm_90a): w1's and w2's TMA tensor maps (a CUtensorMap each, in
    // device memory), 3-D: [experts][n][k], boxes of MOE_WS_BOX_ROWS x GEMM_BK, 128-byte swizzle.
    DEV_PTR(const void) w1_map;
    DEV_PTR(const void) w2_map;
    // The shared expert among the warp-specialized tiles' items (expert number shared_expert):
    // its weights' maps, 3-D as w1_map's with one expert ([1][n][k]): gate_up, its gate's and
    // its up's; down, its down's in shared_w1_map.
    DEV_PTR(const void) shared_w1_map;
    DEV_PTR(const void) shared_w2_map;
    // The warp-specialized tiles take their (item, column tile) units in order from this counter
    // (one per launch; the permute zeroes it beside the item count: MOE_UNIT_COUNTERS).
    DEV_PTR(int32_t) unit_counter;
    // The fp8 16-row tiles and the one-warpgroup wgmma tiles: each item's counter (after the
    // count and the unit counters in the item count's buffer, zeroed by the permute). gate_up's
    // CTAs add one as they finish; with item_done_target > 0 (gate_up's CTAs an item), down's
    // CTAs wait for their item's counter to reach it instead of for gate_up's end (pdl_wait): an
    // item's down starts as soon as its gate_up is done, under the rest of gate_up's tail.
    DEV_PTR(int32_t) item_done;
    int32_t item_done_target;
    int32_t shared_expert;
    // The shared expert's items, the list's last (it is the last expert), taken by the grid's
    // first rows of CTAs and the other items after them (tile_item); 0: the list's order.
    int32_t shared_items_first;
    int32_t n;
    int32_t k;
    int32_t max_items;
    // The stream kernels (moe_stream.cu): each warp hints its weight lines into L2 this many of
    // its chunks beyond the one it is loading (0: none).
    int32_t prefetch_ahead;
    // The W8A8 tiles: x as e4m3 codes ([rows][k], the rows x's are) and their scales
    // ([rows][ceil(k/128)]), from quantize_rows_fp8.
    DEV_PTR(const uint8_t) x_fp8;
    DEV_PTR(const float) x_scale;
};

// quantize_fp8.cu: mats matrices [rows][cols] bf16 -> e4m3 codes (same layout) and scales
// [mats][ceil(rows/128)][ceil(cols/128)] (src/fp8.rs states the rules); one CTA per block.
struct QuantizeFp8Params {
    DEV_PTR(const bf16) src;
    DEV_PTR(uint8_t) codes;
    DEV_PTR(float) scale_inv;
    int32_t rows;
    int32_t cols;
};

// quantize_fp8.cu's quantize_rows_fp8: activations [rows][cols] bf16 (row r at src + r * cols) ->
// e4m3 codes [rows][cols] and one f32 scale a row and group of FP8_BLOCK columns
// ([rows][ceil(cols/128)]), the weights' rules over groups of 1 x 128 (src/fp8.rs, quantize_rows).
struct QuantizeRowsParams {
    DEV_PTR(const bf16) src;
    DEV_PTR(uint8_t) codes;
    DEV_PTR(float) scale;
    int32_t rows;
    int32_t cols;
};

// moe_permute.cu: y[t] (+)= sum_k slot_out[tok_slot[t*topk + k]] (fixed order: deterministic).
// Grid (token, column chunk of COMBINE_THREADS x COMBINE_COLS columns); COMBINE_K_UNROLL slot
// loads in flight a thread.
#define COMBINE_THREADS 128
#define COMBINE_K_UNROLL 8
#define COMBINE_COLS 8  // a thread's columns: one 16-byte load of bf16 a slot
struct CombineParams {
    DEV_PTR(float) y;
    DEV_PTR(const float) base;  // y = the sum + base (the shared expert's output), or the sum (null)
    DEV_PTR(const bf16) slot_out;
    DEV_PTR(const int32_t) tok_slot;
    int32_t tokens;
    int32_t topk;
    int32_t hidden;
};

// dense_stream.cu: y = x w^T (f32_out) or act = bf16(silu(x w1^T) * (x w2^T)) (act_out, gated)
// for `rows` <= DENSE_STREAM_ROWS rows of x [rows][k]; w1, w2 [n][k]. The grid is
// (ceil(n / DENSE_STREAM_COLS), DENSE_STREAM_CLUSTER), a cluster per column tile; k_split, a
// multiple of DENSE_STREAM_KC and at most DENSE_STREAM_MAX_KR, is the k range of a CTA, whose
// dynamic shared memory the host sizes (dense.rs, stream_smem) as the kernel lays it out.
struct DenseStreamParams {
    DEV_PTR(const bf16) x;
    DEV_PTR(const bf16) w1;
    DEV_PTR(const bf16) w2;
    DEV_PTR(float) f32_out;
    DEV_PTR(bf16) act_out;
    int32_t rows;
    int32_t n;
    int32_t k;
    int32_t k_split;
};

// mlp.cu: out[t, j] = bf16(silu(gu[t, j]) * gu[t, inter + j])
struct SiluMulParams {
    DEV_PTR(const float) gu;
    DEV_PTR(bf16) out;
    int32_t rows;
    int32_t inter;
};

// lm_head.cu: per row argmax (ties: lowest id) and its softmax probability.
struct PickParams {
    DEV_PTR(const float) logits;
    DEV_PTR(uint32_t) token;
    DEV_PTR(float) prob;
    // Tensor parallel (optional, may be null): per row this rank's share of the pick over its
    // vocabulary slice, [max logit, token_base + argmax, sum of exp(l - max)] (decode::sample's
    // PartialPick), for the ranks to combine.
    DEV_PTR(float) share;
    int32_t rows;
    int32_t vocab;
    int32_t token_base;
};

// gemm_tiles.cuh (sm_90a): the persistent warp-specialized bf16 GEMM tiles under the dense
// products with their own epilogues (lm_head.cu's lm_head_pick, qkv_rope.cu's qkv_rope_store).
// Persistent CTAs of DENSE_WS_WGS consumer warpgroups (each 64 rows of a DENSE_WS_ROWS-row tile
// by all DENSE_WS_COLS columns of a column tile, one m64n256k16 a k16) and one producer warpgroup
// (the x rows by cp.async; the weights by TMA in boxes of MOE_WS_BOX_ROWS rows of a [n][k] map)
// through DENSE_WS_STAGES stages.
#define DENSE_WS_ROWS 128
#define DENSE_WS_COLS 256
#define DENSE_WS_WGS 2
#define DENSE_WS_STAGES 4
// setmaxnreg's split of the register file: 128 sums a consumer thread and the epilogue's
// reductions spilled in the 168 a thread that an even split of 384 threads leaves.
#define DENSE_WS_PRODUCER_REGS 40
#define DENSE_WS_CONSUMER_REGS 232
static constexpr uint32_t DENSE_WS_THREADS = (DENSE_WS_WGS + 1) * MOE_WG_THREADS;
static constexpr uint32_t DENSE_WS_STAGE_BYTES = (DENSE_WS_ROWS + DENSE_WS_COLS) * GEMM_BK * 2;
// The stages (1024-byte aligned: 1 KB of slack), then their full and empty mbarriers.
static constexpr uint32_t DENSE_WS_SMEM = 1024 + DENSE_WS_STAGES * (DENSE_WS_STAGE_BYTES + 16);
static_assert(DENSE_WS_WGS * MOE_WG_THREADS * DENSE_WS_CONSUMER_REGS + MOE_WG_THREADS * DENSE_WS_PRODUCER_REGS <= 65536,
              "the dense tiles' registers fit an SM");

// lm_head.cu's lm_head_pick (sm_90a): the lm_head GEMM of a greedy step's rows with the pick in
// its epilogue, so the logits are never written (at batch 64 they were ~1 GB a step, written by
// cuBLAS and read back by row_argmax), on the dense tiles above. A unit is (row tile, column
// tile), the row tiles of one column tile consecutive, so the CTAs that share a weight tile run
// at about the same time and its later reads find it in the L2. Each unit leaves, per row, its
// columns' (max, lowest index of the max, sum of exp(l - max)) in `parts`; lm_head_pick_merge
// combines a row's parts into PickParams's outputs, a warp a row (LM_PICK_MERGE_WARPS a CTA). On
// an H100 at batch 64 the GEMM ran at 92% of the measured GEMM rate (cuBLAS's lm_head 88-90%)
// and the pair took 1.55 ms a step against 1.99 for cuBLAS and row_argmax (docs/perf/session59).
#define LM_PICK_MERGE_WARPS 8
struct LmHeadPickParams {
    DEV_PTR(const bf16) x;  // [pick.rows][k], the final norm's rows
    // The lm_head's weights ([pick.vocab][k] bf16) as a TMA map: dims (k, vocab, 1), boxes of
    // GEMM_BK x MOE_WS_BOX_ROWS, 128-byte swizzle (Kernels::tensor_map_bf16_3d).
    DEV_PTR(const void) w_map;
    // [pick.rows][col_tiles][3] floats: max logit, its column (int bits), sum of exp(l - max).
    DEV_PTR(float) parts;
    PickParams pick;  // rows, vocab, the outputs (its logits are unused)
    int32_t k;
    int32_t col_tiles;
};

// qkv_rope.cu's qkv_rope_store (sm_90a): the QKV projection with qk_norm_rope_store's work (the
// per-head QK norm, the partial neox RoPE, K and V into the pages) in its epilogue, on the dense
// tiles above: the f32 sums are normalized and rotated in registers, and the QKV rows are never
// written or read back. A unit is (row tile, column tile), a column tile two heads (head dim 128).
// Where the units leave the last round of CTAs short, the last `tail` units are split `split`
// ways over k: each split writes its sums to `partials`, and the last of a unit's splits to
// arrive (counted in `arrivals`) adds them in split order and runs the epilogue.
#define QKV_ROPE_HEAD_DIM 128
#define QKV_ROPE_MAX_SPLIT 4
// The dense tiles' register split for this kernel: its producers keep more of a unit's work
// description (its k range, the split) than lm_head_pick's, which spilled in 40 registers.
#define QKV_ROPE_PRODUCER_REGS 56
#define QKV_ROPE_CONSUMER_REGS 224
static_assert(DENSE_WS_WGS * MOE_WG_THREADS * QKV_ROPE_CONSUMER_REGS + MOE_WG_THREADS * QKV_ROPE_PRODUCER_REGS <= 65536,
              "qkv_rope_store's registers fit an SM");
// The floats one split of one warpgroup leaves: 128 threads x 128 sums.
#define QKV_ROPE_PARTIAL_FLOATS (MOE_WG_THREADS * 128)
struct QkvRopeParams {
    DEV_PTR(const bf16) x;      // [rope.tokens][k], the input norm's rows
    DEV_PTR(const void) w_map;  // the QKV weights [(nh + 2 nkv) d][k] as a TMA map (as the lm_head's)
    RopeParams rope;            // the norms, angles, positions and outputs (its qkv is unused)
    int32_t k;
    int32_t units;  // row tiles x column tiles; units [units - tail, units) are split
    int32_t tail;
    int32_t split;
    // [tail][split][DENSE_WS_WGS][QKV_ROPE_PARTIAL_FLOATS] (unused where split is 1)
    DEV_PTR(float) partials;
    // [tail][DENSE_WS_WGS] arrivals, zero before a launch (the last arrival resets its count)
    DEV_PTR(int32_t) arrivals;
};

// row_top_k.cu: per logits row its ROW_TOP_K best entries (logit descending, then token id
// ascending: the first of equal maxima comes first, as an argmax keeps it), the row's max m and
// z = sum of exp(l - m); one CTA of TOP_K_THREADS a row. JointThresholdInDel reads these
// instead of whole rows (decode::row_top, whose RowTop is the host side and CPU twin). ROW_TOP_K
// is also the CPU backend's (build.rs reads it from here without bindgen).
#define ROW_TOP_K 16
#define TOP_K_THREADS 256
// Per row ROW_TOP_SUMMARY floats: [m, z, logit_0 .. logit_{K-1}, id_0 .. id_{K-1}], the ids as
// floats (exact below 2^24) and -1 in slots past a vocabulary shorter than ROW_TOP_K.
#define ROW_TOP_SUMMARY (2 * ROW_TOP_K + 2)
struct RowTopKParams {
    DEV_PTR(const float) logits;  // [rows][vocab]
    DEV_PTR(float) summary;       // [rows][ROW_TOP_SUMMARY]
    int32_t rows;
    int32_t vocab;
    // Tensor parallel: the first token id of this rank's vocabulary slice (0 at one rank).
    int32_t token_base;
};

// unmask.cu: LowConfidence over each request's block (see decode/policy.rs::low_confidence).
struct UnmaskParams {
    DEV_PTR(const float) prob;
    DEV_PTR(const int32_t) masked;
    DEV_PTR(const int32_t) quota;
    DEV_PTR(int32_t) chosen;
    int32_t requests;
    int32_t block;
    float threshold;
};

// init.cu: out[i] = mean + std * N(0,1), a counter-based draw from (seed, i).
struct InitParams {
    DEV_PTR(bf16) out_bf16;
    DEV_PTR(float) out_f32;
    uint32_t n_lo;
    uint32_t n_hi;
    uint32_t seed_lo;
    uint32_t seed_hi;
    float mean;
    float std;
    // A tensor-parallel rank's slice draws the whole tensor's values at their indices:
    // out[i] is element offset + i, or with local_cols > 0 the columns col0 .. col0+local_cols
    // of rows of global_cols (element offset + (i / local_cols) * global_cols + col0 + i % local_cols).
    uint32_t offset_lo;
    uint32_t offset_hi;
    uint32_t local_cols;
    uint32_t global_cols;
    uint32_t col0;
};

// init.cu, spin_wait: one thread sleeps `us` microseconds.
struct SpinParams {
    uint32_t us;
};

// ---- sampler.cu ------------------------------------------------------------------------------

// A thread block cluster of SAMPLE_CLUSTER CTAs of SAMPLE_THREADS a row, CTA r reading slice r of
// the row: 2, so that a 157k row is 78.6k tokens a CTA, about 307 a thread a pass, and 264 rows
// are in flight (132 SMs x SAMPLE_CTAS / 2): as bf16 rows (a sampled step's), 83 MB, so the later
// passes find part of their rows gone from the L2. A row's cluster barriers and its dependent
// latencies, not its bytes, bound a wave of rows, so fewer CTAs a row (fewer waves, each CTA's
// slice longer) kept paying: 8, the portable maximum, took a third longer than 4 (sample_rows_bf16
// 0.645 against 1.000 ms a step at batch 64, 0.183 against 0.268 at 16: session 36), and 4 a fifth
// longer than 2 (H100, session 69: 1.294 against 1.019 ms at batch 128, 0.190 against 0.167 at 16;
// sampled steps over three H100s, sessions 69-70: 0.5-1.6% faster at 64, from 3.2% faster to 0.3%
// slower at 128, level at 1 and 16; f32 rows, which only tests and `dllm bench --sample-bf16
// false` use, not measured). One CTA a row (0.943 ms at batch
// 128) drew past the host at u near 1 (its one slice's sums round otherwise), and its steps were
// no faster.
// The bars are found by radix select over the logits' 32-bit order keys in three digit passes of
// SAMPLE_DIGIT0 + 2 x SAMPLE_DIGIT bits (the wide first digit spreads logits that share a sign and
// exponent over more bins, so fewer shared-memory atomics collide). The draw cuts each slice into
// at most SAMPLE_THREADS segments of whole pieces of 4 x WARP f32 or 8 x WARP bf16 tokens (a
// 16-byte vector a lane), so a warp's loads stay coalesced while the segments keep token-id order.
#define SAMPLE_CLUSTER 2
#define SAMPLE_THREADS 256
// f32 logits in flight a thread, SAMPLE_UNROLL / 4 16-byte loads (a slice gives a thread few rounds).
#define SAMPLE_UNROLL 16
#define SAMPLE_SEGMENT_LOADS 4  // f32 segments a warp sums at once, a float4 a lane of each in flight
// CTAs a SM the registers are capped for: 4 (64 registers; a few long-lived values spill; 50 KB of
// shared memory each) keeps 64 KB of loads in flight a SM. The kernel is bound by its per-token
// instructions' latency, so the fourth CTA's warps pay: sample_rows 0.556 against 0.622 ms a step
// at batch 16, 2.061 against 2.404 at 64 with 3 (docs/perf/session15/).
#define SAMPLE_CTAS 4
#define SAMPLE_DIGIT0 12
#define SAMPLE_DIGIT 10
static_assert(SAMPLE_DIGIT0 + 2 * SAMPLE_DIGIT == 32, "three digits cover a 32-bit key");
// The top-p bar in two passes: the tokens of a slice in the first digit's chosen bin that the
// later digits select among from shared memory. A 157k row's bin held a few hundred tokens a
// slice at the bars of flat random rows when a slice was a quarter of the row (session 36; about
// twice that at half); more than this in a slice falls back to the passes over the row.
#define SAMPLE_CANDIDATES 2048

// One row's sampling knobs: decode::sample::Sampling and the row's uniform draw.
struct RowSampling {
    float temperature;  // 0: greedy, as lm_head.cu's row_argmax (argmax, its softmax probability)
    int32_t top_k;      // 0 (or >= vocab) keeps every token
    float top_p;        // >= 1 keeps every token
    float min_p;        // <= 0 keeps every token; capped at 1 (the best token always stays)
    float u;            // uniform in [0, 1): the inverse-CDF draw in token-id order
    // Nonzero: nobody reads this row's pick (a position its step cannot write: LowConfidence
    // and FixedCount write masked positions only), so the row is not read at all and gets
    // token SAMPLE_SKIPPED with probability 0.
    int32_t skip;
};
// The token of a skipped row (RowSampling::skip): no vocabulary id.
#define SAMPLE_SKIPPED 0xffffffffu

// sampler.cu, sample_rows: decode::sample::sample_row_u on the device, one cluster of
// SAMPLE_CLUSTER CTAs per row of logits [rows][vocab] (a grid of rows * SAMPLE_CLUSTER), f32 for
// sample_rows and bf16 for sample_rows_bf16; per row the drawn token and its probability in the
// kept, renormalised distribution.
struct SampleParams {
    DEV_PTR(const void) logits;
    DEV_PTR(const RowSampling) sampling;  // [rows]
    DEV_PTR(uint32_t) token;              // [rows]
    DEV_PTR(float) prob;                  // [rows]
    int32_t rows;
    int32_t vocab;
};
