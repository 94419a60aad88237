//! The routed experts: router (cuBLAS logits + moe_router_select, or moe_router_block for
//! LLaDA2.2's block routing; at few rows moe_route, which at one cluster's rows also does the
//! permute), moe_permute, the grouped expert GEMMs (csrc/moe_gemm.cu) and moe_combine, plus the
//! shared expert's dense MLP.

use super::act::{CudaAct, MoeSlots};
use super::dense::MlpOut;
use super::error::CudaError;
use super::fp8::launch_quantize_rows;
use super::kernels::{params::*, Kernel, Kernels, TENSOR_MAP_BYTES};
use super::weights::{ExpertMatrix, Ffn, MoeWeights};
use super::CudaBackend;
use crate::backend::{BlockPool, LayerRouting, StepBatch};
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

/// The grouped GEMM's rows per work item. bf16 experts on Hopper: the wgmma tiles always (on one
/// H200 they beat the weight stream at every batch from 2 up and match it at 1: docs/PERF.md), of
/// 128 rows once the experts average M128_MIN_ROWS or more (an expert's weights then stream once
/// where two 64-row items read them twice), else 64. Otherwise (fp8 experts, or no wgmma): 64
/// once the experts average 12 rows or more (one item then reads an expert's weights once where
/// 16-row items read them once per 16 rows), else 16 (the weight stream); with fp8 experts,
/// FP8_M64_MIN_ROWS or more (as W8A8, w8a8_m64_min_rows): `large_from` ([`m64_min_rows`]).
/// `forced` (CudaOptions::moe_item_rows) overrides it; 128 only where the wgmma tiles run (else 64).
fn moe_tile_rows(slots: usize, experts: usize, forced: Option<usize>, bf16_wgmma: bool, large_from: usize) -> usize {
    match forced {
        Some(MOE_BM_XLARGE) if !bf16_wgmma => MOE_BM_LARGE,
        Some(rows) => rows,
        None if bf16_wgmma && slots >= M128_MIN_ROWS * experts => MOE_BM_XLARGE,
        None if bf16_wgmma || slots >= large_from * experts => MOE_BM_LARGE,
        None => MOE_BM_SMALL,
    }
}

/// The experts' average rows from which bf16 experts without wgmma, and fp8 experts, take
/// 64-row items (see [`moe_tile_rows`]).
const M64_MIN_ROWS: usize = 12;
/// The experts' average rows from which bf16 experts on Hopper take 128-row items (the
/// warp-specialized tiles). Since down waits for its own item's gate_up (CudaOptions::item_wait),
/// mini's batch 32 (32 rows an expert) ran 1.4-9% faster on them than on 64-row items, batch 16
/// level (docs/PERF.md, session 38, calls 9 and 10); it was 48.
const M128_MIN_ROWS: usize = 32;
/// The experts' average rows from which bf16 gate_up takes 192-row units over the 128-row items
/// (CudaOptions::moe_gate_up_m192). Past 128 rows an expert, 128-row units read its weights from
/// the L2 twice, the second unit often a few rows; at batch 128 (128 rows an expert on average)
/// about half the experts are past 128. Measured in docs/PERF.md (session 50).
const M192_MIN_ROWS: usize = 96;
/// Whether gate_up's 128-row items run as 192-row units ([`M192_MIN_ROWS`]) at `slots` picks
/// over `experts`; `forced` (CudaOptions::moe_gate_up_m192) overrides it.
fn gate_up_m192_units(slots: usize, experts: usize, forced: Option<bool>) -> bool {
    forced.unwrap_or(slots >= M192_MIN_ROWS * experts)
}

/// The experts' average rows from which fp8 experts take 64-row items. On Hopper those run the
/// tiles that widen the codes in registers (CudaOptions::fp8_codes_in_registers): at 16 rows an
/// expert (batch 16) 12-21% faster than the 16-row tiles (csrc/moe_stream.cu: mini 6.86-7.16
/// against 7.93-8.24 ms a step, flash 31.3-33.0 against 39.5), at 8 (batch 8) level to 3% slower
/// (docs/PERF.md, session 39); 12 lies between. It was 24, with the tiles that widen the codes in
/// shared memory (4% slower than the 16-row tiles at 16 rows an expert: session 37).
const FP8_M64_MIN_ROWS: usize = 12;

/// The experts' average rows from which 64-row items run: bf16 (without wgmma), fp8 as W8A16, or
/// fp8 as W8A8 (`fp8`) for experts `hidden` wide.
fn m64_min_rows(fp8: Option<Fp8Tiles>, hidden: usize) -> usize {
    match fp8 {
        None => M64_MIN_ROWS,
        Some(Fp8Tiles::W8a8) => w8a8_m64_min_rows(hidden),
        Some(_) => FP8_M64_MIN_ROWS,
    }
}

/// The experts' average rows from which fp8 experts take 64-row items as W8A8
/// (CudaOptions::fp8_activations), by the experts' width (gate_up's k: a CTA's fixed costs come
/// once per k it streams). Against the 16-row W8A16 tiles (docs/PERF.md, session 40): at 8 rows an
/// expert (batch 8) 11-12% faster steps at mini's shape (hidden 2048) and 20-24% at flash's
/// (4096); at 4 (batch 4) 4% slower at mini's and 14% faster at flash's; at 1-3 (batch 1) 22%
/// and 4% slower. So from 8 rows below 4096 wide, from 4 at 4096 and wider.
fn w8a8_m64_min_rows(hidden: usize) -> usize {
    if hidden >= 4096 {
        4
    } else {
        8
    }
}

/// The most rows moe_route takes by default: its logits and selection in one launch (a cluster
/// per ROUTE_ROWS rows, each reading the router's weights) against cuBLAS's logits and
/// moe_router_select, both followed by moe_permute past ROUTE_ROWS. In steps at mini's shape
/// (docs/PERF.md, session 29) it was 1-2% faster at batch 4 and 8, 0.5% at 16 (512 rows), and
/// 1% slower at 32, 7% at 64. Since batch 16 takes the shared expert among its items and gate_up
/// follows moe_permute as its dependent (session 30), it is level at batch 4 and 8 and 2% slower
/// at 16, so it stops at 256 rows.
const FUSED_ROUTE_MAX_ROWS: usize = 8 * ROUTE_ROWS;

/// Whether the selection in registers (csrc/route_select.cuh: moe_route's and moe_router_select's)
/// takes this model's router: up to ROUTE_MAX_E experts in groups of a power of two in [2, WARP]
/// experts (a group's lanes then lie in one warp). Other routers select by moe_router_select_wide.
fn select_fits(c: &crate::config::ModelConfig) -> bool {
    let e = c.num_experts;
    let gsize = if c.n_group > 0 && e.is_multiple_of(c.n_group) { e / c.n_group } else { 0 };
    e <= ROUTE_MAX_E && gsize.is_power_of_two() && (2..=WARP).contains(&gsize)
}

/// moe_router_select's tokens (warps) a CTA at `rows` rows: about two CTAs an SM, 4 to
/// ROUTER_SELECT_MAX_WARPS (a power of two). A CTA counts its picks for one global atomic an
/// expert: more tokens a CTA, fewer atomics on an expert most tokens pick (a 4,096-token prefill's
/// selection 31 -> 19 us a layer at 16), but fewer CTAs at fewer rows (batch 16 at 16: 8.8 -> 10.8
/// us; docs/PERF.md, session 32).
fn select_warps(rows: usize, sm_count: usize) -> usize {
    (rows / (2 * sm_count).max(1)).next_power_of_two().clamp(4, ROUTER_SELECT_MAX_WARPS)
}

/// Whether moe_route's kernel takes this model's router: the selection in registers fits, the
/// experts are a multiple of 16 (its n8 tile pairs), and no block routing (LLaDA2.2's routers stay
/// moe_router_block).
pub(super) fn route_fits(c: &crate::config::ModelConfig) -> bool {
    c.block_routing().is_none() && select_fits(c) && c.num_experts.is_multiple_of(16)
}

/// One expert GEMM launch: the kernel, the weight rows (output columns) a CTA takes, its
/// threads, the dynamic shared memory params.h sizes it for, and whether it is persistent.
struct ExpertGemm {
    kernel: Kernel,
    cols: usize,
    threads: u32,
    smem: u32,
    persistent: bool,
}

impl ExpertGemm {
    /// Tiles: (n / cols CTAs, one row of them per possible work item); CTAs past the item count
    /// exit. Persistent (the stream kernels): as many CTAs as the GPU holds at once, at most one
    /// per possible (item, column tile) unit; each walks units gridDim.x apart.
    fn grid(&self, k: &Kernels, n: usize, max_items: usize) -> Result<(u32, u32, u32)> {
        let tiles = n.div_ceil(self.cols);
        if !self.persistent {
            return Ok((tiles as u32, max_items as u32, 1));
        }
        let resident = k.resident_ctas(self.kernel, self.threads, self.smem)? as usize;
        Ok(((tiles * max_items).min(resident) as u32, 1, 1))
    }
}

/// How fp8 experts' 64-row items run on Hopper (CudaOptions::fp8_codes_in_registers and
/// fp8_activations): the codes widened to bf16 into shared memory a 64-column stage at a time, or
/// in registers as wgmma's A operand (W8A16 both), or multiplied as they are by the activations'
/// codes (W8A8: quantize_rows_fp8 before each GEMM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fp8Tiles {
    SharedMemory,
    Registers,
    W8a8,
}

/// [gate_up, down] for the tile rows and the weight type: 16-row items go to the weight-stream
/// kernels (csrc/moe_stream.cu), or with fp8 experts and `fp8_m16` to its fp8 tiles (faster at
/// every batch that makes 16-row items: docs/PERF.md, session 37); 64- and 128-row items to the
/// shared-memory tiles (csrc/moe_gemm.cu; 128 rows: bf16 with `wgmma` only; with `wgmma`, the
/// Hopper path, the fp8 CTAs take the bf16 tiles' columns, in the way `fp8_m64` names). `ws`
/// (bf16 with `wgmma`, 64 or 128 rows, the layer's tensor maps at hand): the persistent
/// warp-specialized tiles, whose gate_up over 128-row items takes 192-row units with
/// `gate_up_m192` (csrc/moe_gemm.cu, ws_unit_rows; down keeps the 128-row items).
fn expert_gemms(tile_m: usize, fp8: bool, wgmma: bool, ws: bool, gate_up_m192: bool, fp8_m16: bool, fp8_m64: Fp8Tiles) -> [ExpertGemm; 2] {
    let stream = |kernel, cols| ExpertGemm { kernel, cols, threads: STREAM_THREADS as u32, smem: 0, persistent: true };
    let fp8_tiles = |kernel, smem| ExpertGemm { kernel, cols: GEMM_BN, threads: GEMM_THREADS as u32, smem, persistent: false };
    let tiles = |kernel, cols, threads: u32, smem| ExpertGemm { kernel, cols, threads, smem, persistent: false };
    let (gu, dn) = (STREAM_GATE_UP_ROWS, STREAM_DOWN_ROWS);
    let (gu_cols, dn_cols) = (MOE_MMA_GATE_UP_COLS, MOE_MMA_DOWN_COLS);
    let ws_tiles = |kernel, cols, smem| ExpertGemm { kernel, cols, threads: MOE_WS_THREADS, smem, persistent: true };
    let (ws_gu, ws_dn) = (MOE_WS_GATE_UP_COLS, MOE_WS_DOWN_COLS);
    use Kernel as K;
    match (tile_m, fp8) {
        (MOE_BM_XLARGE, false) if ws && wgmma => {
            let gate_up = match gate_up_m192 {
                true => ws_tiles(K::MoeGateUpM192Ws, ws_gu, MOE_WS_M192_SMEM),
                false => ws_tiles(K::MoeGateUpM128Ws, ws_gu, MOE_WS_M128_SMEM),
            };
            [gate_up, ws_tiles(K::MoeDownM128Ws, ws_dn, MOE_WS_M128_SMEM)]
        }
        (MOE_BM_LARGE, false) if ws && wgmma => {
            [ws_tiles(K::MoeGateUpM64Ws, ws_gu, MOE_WS_M64_SMEM), ws_tiles(K::MoeDownM64Ws, ws_dn, MOE_WS_M64_SMEM)]
        }
        (MOE_BM_SMALL, true) if fp8_m16 => [
            tiles(K::MoeGateUpFp8M16, FP8_M16_GATE_UP_COLS, MOE_TILES_THREADS, FP8_M16_SMEM),
            tiles(K::MoeDownFp8M16, FP8_M16_DOWN_COLS, MOE_TILES_THREADS, FP8_M16_SMEM),
        ],
        (MOE_BM_SMALL, false) => [stream(K::MoeGateUpStream, gu), stream(K::MoeDownStream, dn)],
        (MOE_BM_SMALL, true) => [stream(K::MoeGateUpStreamFp8, gu), stream(K::MoeDownStreamFp8, dn)],
        (_, true) if wgmma && fp8_m64 == Fp8Tiles::W8a8 => [
            tiles(K::MoeGateUpM64W8a8, gu_cols, MOE_TILES_THREADS, MOE_TILES_M64_W8A8_SMEM),
            tiles(K::MoeDownM64W8a8, dn_cols, MOE_TILES_THREADS, MOE_TILES_M64_W8A8_SMEM),
        ],
        (_, true) if wgmma && fp8_m64 == Fp8Tiles::Registers => [
            tiles(K::MoeGateUpM64Fp8Ra, gu_cols, MOE_TILES_THREADS, MOE_TILES_M64_FP8_RA_SMEM),
            tiles(K::MoeDownM64Fp8Ra, dn_cols, MOE_TILES_THREADS, MOE_TILES_M64_FP8_RA_SMEM),
        ],
        (_, true) if wgmma => [
            tiles(K::MoeGateUpM64Fp8, gu_cols, MOE_TILES_THREADS, MOE_TILES_M64_FP8_SMEM),
            tiles(K::MoeDownM64Fp8, dn_cols, MOE_TILES_THREADS, MOE_TILES_M64_FP8_SMEM),
        ],
        (_, true) => [fp8_tiles(K::MoeGateUpM64Fp8, MOE_GATE_UP_M64_FP8_SMEM), fp8_tiles(K::MoeDownM64Fp8, MOE_DOWN_M64_FP8_SMEM)],
        (MOE_BM_XLARGE, false) => [
            tiles(K::MoeGateUpM128, gu_cols, MOE_TILES_THREADS, MOE_TILES_M128_SMEM),
            tiles(K::MoeDownM128, dn_cols, MOE_TILES_THREADS, MOE_TILES_M128_SMEM),
        ],
        (_, false) => {
            let smem = if wgmma { MOE_TILES_M64_WGMMA_SMEM } else { MOE_TILES_M64_SMEM };
            [tiles(K::MoeGateUpM64, gu_cols, MOE_TILES_THREADS, smem), tiles(K::MoeDownM64, dn_cols, MOE_TILES_THREADS, smem)]
        }
    }
}

/// The router's device outputs: per row its picks and their weights (`[rows * picks]`), the
/// f32 logits they were chosen from, and (recording block routing) each block's pool.
struct RouterOut {
    ids: CudaSlice<i32>,
    wts: CudaSlice<f32>,
    logits: CudaSlice<f32>,
    pool_ids: Option<CudaSlice<i32>>,
}

/// moe_permute's outputs (or moe_route's, at one cluster's rows): per slot its token and routing
/// weight, per pick its slot, and the work list of (expert, first slot, rows) items.
struct Permuted {
    slot_token: CudaSlice<i32>,
    slot_weight: CudaSlice<f32>,
    tok_slot: CudaSlice<i32>,
    items: CudaSlice<i32>,
    /// The item count, then the MOE_UNIT_COUNTERS counters the warp-specialized tiles take their
    /// units from, then one counter an item (MoeGemmParams::item_done); zeroed with the count.
    num_items: CudaSlice<i32>,
}

/// What the router counts for moe_permute: picks per expert (`[experts]`, zeroed before the
/// router runs) and each pick's place among its expert's (`[rows * picks]`).
struct PickCounts {
    counts: CudaSlice<i32>,
    pick_pos: CudaSlice<i32>,
}

/// What a MoE layer's launches write, at `rows` rows: allocated before the layer's
/// post-attention norm is launched ([`CudaBackend::moe_buffers`], from
/// [`CudaBackend::add_rms_norm`]), so that no allocation lies between that norm and the router,
/// which is the norm's programmatic dependent (moe_route): a dependent's edge is to the stream's
/// node before it, and in a recorded step an allocation is a node. The norm also zeroes the
/// router's pick counts, where it counts into a device buffer: a memset node there took ~5 us a
/// layer (batch 4 and 16 in the kernel trace, docs/PERF.md session 31). An op run on its own
/// allocates them in [`CudaBackend::moe`] instead.
pub(super) struct MoeBuffers {
    layer: usize,
    rows: usize,
    act: CudaSlice<u16>,
    slot_out: CudaSlice<u16>,
    perm: Permuted,
    /// moe_permute's counts (none where moe_route permutes one cluster's rows itself), and
    /// whether the norm zeroed them.
    counts: Option<PickCounts>,
    counts_zeroed: bool,
    /// moe_route's outputs, where the router is moe_route.
    route: Option<RouterOut>,
}

impl MoeBuffers {
    /// The counts the post-attention norm zeroes, if any (marked zeroed: the norm is launched next).
    pub(super) fn counts_to_zero(&mut self) -> Option<&CudaSlice<i32>> {
        let c = self.counts.as_ref()?;
        self.counts_zeroed = true;
        Some(&c.counts)
    }
}

/// A MoE layer's sizes at a row count (see [`CudaBackend::moe_shape`]).
struct MoeShape {
    /// The shared expert among the routed items (expert number `num_experts`, every token's
    /// last pick).
    shared_in_items: bool,
    topk: usize,
    experts: usize,
    slots: usize,
    tile_m: usize,
    max_items: usize,
}

/// A MoE layer's buffers that its kernels read but its output does not: kept with the output
/// ([`MoeSlots`]) so that they are freed once the next layer's input norm is launched. A free is
/// a stream operation (a node in a captured step): between two launches it would cut a
/// programmatic edge (gate_up's, down's), a dependent's edge being to the node before it. (Such
/// nodes between plain launches measured free: docs/PERF.md, session 30.)
pub(super) struct MoeScratch {
    _routed: RouterOut,
    _counts: Option<PickCounts>,
    _perm: [CudaSlice<i32>; 3],
    _slot_weight: CudaSlice<f32>,
    _act: CudaSlice<u16>,
    _w8a8: Option<W8a8Scratch>,
}

/// The W8A8 tiles' inputs (CudaOptions::fp8_activations): x's and act's e4m3 codes and their
/// scales (one a row and 128 columns).
pub(super) struct W8a8Scratch {
    x_codes: CudaSlice<u8>,
    x_scales: CudaSlice<f32>,
    act_codes: CudaSlice<u8>,
    act_scales: CudaSlice<f32>,
}

/// A MoE layer's TMA tensor maps, one device buffer: the routed experts' gate, up and down
/// ([experts][n][k] each, boxes of MOE_WS_BOX_ROWS x GEMM_BK), then, where the shared expert can
/// be one of the items (bf16, the routed experts' intermediate size), its gate, up and down
/// ([1][n][k]).
pub(super) struct ExpertMaps {
    maps: CudaSlice<u8>,
    shared: bool,
}

impl ExpertMaps {
    /// The device address of map `i` (0-2 the routed experts', 3-5 the shared expert's).
    fn at(&self, b: &CudaBackend, i: usize) -> u64 {
        b.p(&self.maps) + (i * TENSOR_MAP_BYTES) as u64
    }
}

impl CudaBackend {
    /// Per layer, the experts' TMA tensor maps that the warp-specialized tiles read
    /// ([`ExpertMaps`]); `None` for a dense layer, fp8 experts, a GPU without wgmma, or a k
    /// whose rows TMA cannot step (not a multiple of 16 bytes).
    pub(super) fn expert_tensor_maps(&self) -> Result<Vec<Option<ExpertMaps>>> {
        let (h, im, e) = (self.cfg.hidden_size, self.cfg.moe_intermediate_size, self.cfg.num_experts);
        let bbox = [GEMM_BK as u32, MOE_WS_BOX_ROWS as u32, 1];
        let mut maps = Vec::with_capacity(self.w.layers.len());
        for l in &self.w.layers {
            let Ffn::Moe(m) = &l.ffn else {
                maps.push(None);
                continue;
            };
            let (ExpertMatrix::Bf16(gate), ExpertMatrix::Bf16(up), ExpertMatrix::Bf16(down)) = (&m.gate, &m.up, &m.down) else {
                maps.push(None);
                continue;
            };
            if !self.wgmma || h % 8 != 0 || im % 8 != 0 {
                maps.push(None);
                continue;
            }
            let mut bytes = Vec::with_capacity(6 * TENSOR_MAP_BYTES);
            let mut matrices = vec![(self.p(gate), [h, im, e]), (self.p(up), [h, im, e]), (self.p(down), [im, h, e])];
            let shared = m.shared.as_ref().filter(|s| s.inter == im);
            if let Some(s) = shared {
                let (gate, up) = self.gate_and_up(s);
                matrices.extend([(gate, [h, im, 1]), (up, [h, im, 1]), (self.p(&s.down), [im, h, 1])]);
            }
            for (w, dims) in matrices {
                bytes.extend(Kernels::tensor_map_bf16_3d(w, dims.map(|d| d as u64), bbox)?);
            }
            maps.push(Some(ExpertMaps { maps: self.k.upload(&bytes, "the experts' tensor maps")?, shared: shared.is_some() }));
        }
        Ok(maps)
    }

    /// Router only: (expert ids, weights) per row, `[rows * topk]` each (tests). A block-routed
    /// model routes the rows as one run from position 0.
    pub fn route(&mut self, h: &CudaAct, layer: usize) -> Result<(Vec<i32>, Vec<f32>)> {
        let Ffn::Moe(m) = &self.w.layers[layer].ffn else { bail!("layer {layer} is dense") };
        let x = self.bf16_of(h, "route")?;
        let out = self.router(m, x, h.rows, None, None, false, None)?;
        Ok((self.download(&out.ids, "router ids")?, self.download(&out.wts, "router weights")?))
    }

    /// moe_router_block alone on given fp32 logits `[rows * E]` and bias: (expert ids, weights)
    /// per row, `[rows * topk]` each, the rows cut into routing blocks of `block` (tests: the
    /// kernel against cpu::route_block).
    pub fn route_block_logits(&mut self, logits: &[f32], bias: &[f32], capacity: usize, block: usize) -> Result<(Vec<i32>, Vec<f32>)> {
        let e = self.cfg.num_experts;
        if bias.len() != e || !logits.len().is_multiple_of(e) {
            bail!("route_block_logits: {} logits, {} biases for {e} experts", logits.len(), bias.len());
        }
        let rows = logits.len() / e;
        let (lg, b) = (self.upload(logits, "router logits")?, self.upload(bias, "router bias")?);
        let (ids, wts) = self.select_block(&lg, &b, rows, capacity, block, None, None, None)?;
        Ok((self.download(&ids, "router ids")?, self.download(&wts, "router weights")?))
    }

    /// LLaDA2.2's selection: per routing block (rows `[i * block, (i + 1) * block)`, the last
    /// possibly short) a pool of `capacity` experts, each row's top-k inside it (and the shared
    /// expert as the last pick, as [`CudaBackend::router`] says). `pool_ids` (recording,
    /// `[blocks * capacity]`): where the kernel writes each block's pool in rank order. `counts`
    /// as [`CudaBackend::router`] says.
    #[allow(clippy::too_many_arguments)]
    fn select_block(
        &self,
        logits: &CudaSlice<f32>,
        bias: &CudaSlice<f32>,
        rows: usize,
        capacity: usize,
        block: usize,
        shared_expert: Option<usize>,
        pool_ids: Option<&CudaSlice<i32>>,
        counts: Option<&PickCounts>,
    ) -> Result<(CudaSlice<i32>, CudaSlice<f32>)> {
        let c = &self.cfg;
        if block == 0 || capacity < c.num_experts_per_tok || capacity > c.num_experts {
            bail!("block routing: block {block}, capacity {capacity} for top-{} of {} experts", c.num_experts_per_tok, c.num_experts);
        }
        let picks = c.num_experts_per_tok + shared_expert.is_some() as usize;
        let ids = self.k.alloc::<i32>(rows * picks, "router ids")?;
        let wts = self.alloc_f32(rows * picks, "router weights")?;
        let p = RouterBlockParams {
            logits: self.p(logits),
            bias: self.p(bias),
            topk_ids: self.p(&ids),
            topk_w: self.p(&wts),
            tokens: rows as i32,
            experts: c.num_experts as i32,
            topk: c.num_experts_per_tok as i32,
            capacity: capacity as i32,
            block: block as i32,
            scale: c.routed_scaling_factor,
            shared_expert: shared_expert.map_or(-1, |e| e as i32),
            pool_ids: pool_ids.map_or(0, |b| self.p(b)),
            counts: counts.map_or(0, |c| self.p(&c.counts)),
            pick_pos: counts.map_or(0, |c| self.p(&c.pick_pos)),
        };
        if rows > 0 {
            self.k.launch(Kernel::MoeRouterBlock, (rows as u32, 1, 1), ROUTER_THREADS as u32, &p)?;
        }
        Ok((ids, wts))
    }

    /// The routed picks, `[rows][topk]`, or `[rows][topk + 1]` with `shared_expert`: every token's
    /// last pick is then that expert number with weight 1. `pools` (recording a block-routed
    /// forward): also each routing block's pool. `counts` (a forward, for moe_permute): where
    /// the kernel counts each expert's picks and gives each pick its place among them.
    #[allow(clippy::too_many_arguments)]
    fn router(
        &self,
        m: &MoeWeights,
        x: &CudaSlice<u16>,
        rows: usize,
        shared_expert: Option<usize>,
        counts: Option<&PickCounts>,
        pools: bool,
        out: Option<RouterOut>,
    ) -> Result<RouterOut> {
        let c = &self.cfg;
        let picks = c.num_experts_per_tok + shared_expert.is_some() as usize;
        if self.routes_in_one_launch(rows) {
            return self.fused_route(m, x, rows, shared_expert, counts, None, out);
        }
        // fp32 logits h W^T (bf16 inputs, fp32 accumulate: the CPU twin's math), then
        // the selection kernel.
        let logits = self.gemm("router logits", x, &m.router, rows, c.num_experts, c.hidden_size)?;
        if let Some(br) = c.block_routing() {
            // The rows' routing blocks are consecutive chunks of br.block (checked by moe()).
            let pool_ids = pools.then(|| self.k.alloc::<i32>(rows.div_ceil(br.block).max(1) * br.capacity, "routing pools")).transpose()?;
            let (ids, wts) = self.select_block(&logits, &m.bias, rows, br.capacity, br.block, shared_expert, pool_ids.as_ref(), counts)?;
            return Ok(RouterOut { ids, wts, logits, pool_ids });
        }
        let ids = self.k.alloc::<i32>(rows * picks, "router ids")?;
        let wts = self.alloc_f32(rows * picks, "router weights")?;
        let p = self.selection_params(m, &logits, &ids, &wts, rows, shared_expert, counts);
        if rows > 0 {
            let (kernel, warps) = if select_fits(c) {
                (Kernel::MoeRouterSelect, select_warps(rows, self.sm_count))
            } else {
                (Kernel::MoeRouterSelectWide, ROUTER_SELECT_WIDE_WARPS)
            };
            self.k.launch(kernel, (rows.div_ceil(warps) as u32, 1, 1), (warps * WARP) as u32, &p)?;
        }
        Ok(RouterOut { ids, wts, logits, pool_ids: None })
    }

    /// The top-k selection's parameters over `rows` rows of f32 `logits` (moe_router_select
    /// reads them; moe_route writes them first): the model's grouped top-k, its outputs `ids`
    /// and `wts`, and with `counts` each expert's pick count and each pick's place among them.
    #[allow(clippy::too_many_arguments)]
    fn selection_params(
        &self,
        m: &MoeWeights,
        logits: &CudaSlice<f32>,
        ids: &CudaSlice<i32>,
        wts: &CudaSlice<f32>,
        rows: usize,
        shared_expert: Option<usize>,
        counts: Option<&PickCounts>,
    ) -> RouterParams {
        let c = &self.cfg;
        RouterParams {
            logits: self.p(logits),
            bias: self.p(&m.bias),
            topk_ids: self.p(ids),
            topk_w: self.p(wts),
            tokens: rows as i32,
            experts: c.num_experts as i32,
            topk: c.num_experts_per_tok as i32,
            n_group: c.n_group as i32,
            topk_group: c.topk_group as i32,
            scale: c.routed_scaling_factor,
            shared_expert: shared_expert.map_or(-1, |e| e as i32),
            counts: counts.map_or(0, |c| self.p(&c.counts)),
            pick_pos: counts.map_or(0, |c| self.p(&c.pick_pos)),
        }
    }

    /// A MoE layer's sizes at `rows` rows.
    fn moe_shape(&self, m: &MoeWeights, rows: usize) -> MoeShape {
        let c = &self.cfg;
        let shared_in_items = self.shared_in_items(m, rows);
        let (topk, experts) = (c.num_experts_per_tok + shared_in_items as usize, c.num_experts + shared_in_items as usize);
        let slots = rows * topk;
        let tile_m = self.tile_rows(m, rows);
        MoeShape { shared_in_items, topk, experts, slots, tile_m, max_items: experts.min(slots) + slots / tile_m + 1 }
    }

    /// What MoE layer `layer`'s launches write at `rows` rows ([`MoeBuffers`]); `None` for a
    /// dense layer.
    pub(super) fn moe_buffers(&self, layer: usize, rows: usize) -> Result<Option<MoeBuffers>> {
        let Ffn::Moe(m) = &self.w.layers[layer].ffn else { return Ok(None) };
        let (h, im) = (self.cfg.hidden_size, self.cfg.moe_intermediate_size);
        let MoeShape { shared_in_items, experts, slots, max_items, .. } = self.moe_shape(m, rows);
        let act = self.alloc_bf16(slots * im, "expert activations")?;
        let slot_out = self.alloc_bf16(slots * h, "expert outputs")?;
        let perm = Permuted {
            slot_token: self.k.alloc::<i32>(slots, "slot tokens")?,
            slot_weight: self.alloc_f32(slots, "slot weights")?,
            tok_slot: self.k.alloc::<i32>(slots, "token slots")?,
            items: self.k.alloc::<i32>(3 * max_items, "MoE work items")?,
            // The count, the expert GEMMs' unit counters (csrc/params.h, MOE_UNIT_COUNTERS), the
            // items' counters.
            num_items: self.k.alloc::<i32>(1 + MOE_UNIT_COUNTERS + max_items, "MoE item count")?,
        };
        let fused = self.routes_in_one_launch(rows);
        // moe_route permutes one cluster's rows itself, counting in shared memory.
        let counts = if fused && rows <= ROUTE_ROWS {
            None
        } else {
            Some(PickCounts {
                counts: self.k.alloc::<i32>(experts, "expert pick counts")?,
                pick_pos: self.k.alloc::<i32>(slots, "pick places")?,
            })
        };
        let route = if fused { Some(self.router_out(rows, shared_in_items)?) } else { None };
        Ok(Some(MoeBuffers { layer, rows, act, slot_out, perm, counts, counts_zeroed: false, route }))
    }

    /// moe_route's outputs at `rows` rows: the f32 logits, the picks and their weights.
    fn router_out(&self, rows: usize, shared_in_items: bool) -> Result<RouterOut> {
        let c = &self.cfg;
        let picks = c.num_experts_per_tok + shared_in_items as usize;
        Ok(RouterOut {
            logits: self.alloc_f32(rows * c.num_experts, "router logits")?,
            ids: self.k.alloc::<i32>(rows * picks, "router ids")?,
            wts: self.alloc_f32(rows * picks, "router weights")?,
            pool_ids: None,
        })
    }

    /// Whether moe_route takes the router of `rows` rows: by default up to FUSED_ROUTE_MAX_ROWS
    /// (at one cluster's rows, ROUTE_ROWS, it also does the permute); `CudaOptions::fused_router`
    /// forces it either way. Only where its kernel fits the model (see [`route_fits`]) and on
    /// Hopper (thread block clusters).
    fn routes_in_one_launch(&self, rows: usize) -> bool {
        self.wgmma && route_fits(&self.cfg) && self.opts.fused_router.unwrap_or(rows <= FUSED_ROUTE_MAX_ROWS)
    }

    /// moe_route: the logits and the picks (as [`CudaBackend::router`] returns them) in one
    /// launch, a cluster per ROUTE_ROWS rows; with `permute` (at most ROUTE_ROWS rows) also
    /// moe_permute's outputs for items of `tile_m` rows, else with `counts` the counts moe_permute
    /// reads.
    #[allow(clippy::too_many_arguments)]
    fn fused_route(
        &self,
        m: &MoeWeights,
        x: &CudaSlice<u16>,
        rows: usize,
        shared_expert: Option<usize>,
        counts: Option<&PickCounts>,
        permute: Option<(&Permuted, usize)>,
        out: Option<RouterOut>,
    ) -> Result<RouterOut> {
        let c = &self.cfg;
        let RouterOut { logits, ids, wts, .. } = match out {
            Some(o) => o,
            None => self.router_out(rows, shared_expert.is_some())?,
        };
        let mut p = RouteParams {
            sel: self.selection_params(m, &logits, &ids, &wts, rows, shared_expert, counts),
            x: self.p(x),
            w: self.p(&m.router),
            hidden: c.hidden_size as i32,
            ..Default::default()
        };
        if let Some((out, tile_m)) = permute {
            if rows > ROUTE_ROWS {
                bail!("moe_route permutes at most {ROUTE_ROWS} rows (one cluster), got {rows}");
            }
            p.slot_token = self.p(&out.slot_token);
            p.slot_weight = self.p(&out.slot_weight);
            p.tok_slot = self.p(&out.tok_slot);
            p.items = self.p(&out.items);
            p.num_items = self.p(&out.num_items);
            p.tile_m = tile_m as i32;
        }
        if rows > 0 {
            // One cluster's rows over a cluster of ROUTE_CLUSTER_WIDE (each CTA reads half the
            // weight slice) where the GPU places one (`CudaOptions::wide_route`), else a cluster
            // of ROUTE_CLUSTER per ROUTE_ROWS rows (a wave of them up to 512 rows).
            let wide = rows <= ROUTE_ROWS
                && self.opts.wide_route
                && self.k.large_cluster_fits(Kernel::MoeRouteWide, ROUTE_CLUSTER_WIDE as u32, ROUTE_THREADS as u32, ROUTE_SMEM)?;
            let (kernel, ctas) = if wide {
                (Kernel::MoeRouteWide, ROUTE_CLUSTER_WIDE)
            } else {
                (Kernel::MoeRoute, rows.div_ceil(ROUTE_ROWS) * ROUTE_CLUSTER)
            };
            // A programmatic dependent: its weight loads overlap the kernel before (csrc/moe_route.cu).
            self.k.launch_dependent(kernel, (ctas as u32, 1, 1), ROUTE_THREADS as u32, ROUTE_SMEM, &p)?;
        }
        Ok(RouterOut { ids, wts, logits, pool_ids: None })
    }

    /// A MoE layer's routing read back from the router's device outputs (recording): the picks
    /// without the shared expert, the pools, and the biased scores of the f32 logits.
    fn read_routing(&self, layer: usize, m: &MoeWeights, out: &RouterOut, rows: usize, picks_per_row: usize) -> Result<LayerRouting> {
        let c = &self.cfg;
        let e = c.num_experts;
        let ids = self.download(&out.ids, "router ids (recording)")?;
        let logits = self.download(&out.logits, "router logits (recording)")?;
        let bias = self.download(&m.bias, "router bias (recording)")?;
        let biased = crate::backend::cpu::biased_scores(&logits, &bias);
        let picks =
            ids.chunks(picks_per_row).take(rows).map(|r| r[..c.num_experts_per_tok].iter().map(|&x| x as usize).collect()).collect();
        let pools = match (c.block_routing(), &out.pool_ids) {
            (Some(br), Some(p)) => {
                let pool_ids = self.download(p, "routing pools (recording)")?;
                (0..rows.div_ceil(br.block))
                    .map(|b| BlockPool {
                        rows: b * br.block..rows.min((b + 1) * br.block),
                        experts: pool_ids[b * br.capacity..(b + 1) * br.capacity].iter().map(|&x| x as usize).collect(),
                    })
                    .collect()
            }
            _ => vec![],
        };
        Ok(LayerRouting { layer, picks, pools, biased: biased.chunks(e).map(<[f32]>::to_vec).collect() })
    }

    /// Point the GEMM's w1 (and w2, gated) at the experts' matrices, bf16 or fp8 with scales.
    fn set_weights(&self, g: &mut MoeGemmParams, w1: &ExpertMatrix, w2: Option<&ExpertMatrix>) {
        (g.w1, g.w1_fp8, g.w1_scale) = self.matrix_ptrs(w1);
        (g.w2, g.w2_fp8, g.w2_scale) = w2.map_or((0, 0, 0), |w| self.matrix_ptrs(w));
    }

    /// (bf16 weights, fp8 codes, fp8 scales): the addresses the kernel reads, 0 for the others.
    fn matrix_ptrs(&self, w: &ExpertMatrix) -> (u64, u64, u64) {
        match w {
            ExpertMatrix::Bf16(b) => (self.p(b), 0, 0),
            ExpertMatrix::Fp8 { codes, scale_inv } => (0, self.p(codes), self.p(scale_inv)),
        }
    }

    /// Whether the MoE layers' fp8 experts run W8A8 for `rows` tokens (the W8A8 tiles, with
    /// their activations' quantize launches).
    pub(super) fn w8a8_experts_at(&self, rows: usize) -> bool {
        self.fp8_m64_tiles() == Fp8Tiles::W8a8
            && self.w.layers.iter().any(
                |l| matches!(&l.ffn, Ffn::Moe(m) if matches!(m.gate, ExpertMatrix::Fp8 { .. }) && self.tile_rows(m, rows) == MOE_BM_LARGE),
            )
    }

    /// Whether the shared expert runs inside the routed experts' launches for `rows` tokens
    /// (see [`CudaBackend::moe`]).
    pub fn shared_expert_in_items(&self, rows: usize) -> bool {
        self.w.layers.iter().any(|l| matches!(&l.ffn, Ffn::Moe(m) if self.shared_in_items(m, rows)))
    }

    /// The rows of the expert GEMMs' work items for `rows` tokens of `m`'s layer.
    fn tile_rows(&self, m: &MoeWeights, rows: usize) -> usize {
        let c = &self.cfg;
        let bf16 = matches!(m.gate, ExpertMatrix::Bf16(_));
        let large_from = m64_min_rows((!bf16).then(|| self.fp8_m64_tiles()), c.hidden_size);
        moe_tile_rows(rows * c.num_experts_per_tok, c.num_experts, self.opts.moe_item_rows, bf16 && self.wgmma, large_from)
    }

    /// The shared expert as one more expert of the routed experts' launches (the weight stream
    /// or the bf16 tiles): at a few tokens its own cuBLAS GEMMs (+ silu_mul) read its weights at
    /// a fraction of the bandwidth (flash's TP2 batch-1 step: ~23 us a layer for 12 MB), while as
    /// items beside the routed experts it takes a few microseconds. Each of its items reads the
    /// weights again, so only up to SHARED_STREAM_MAX_ITEMS items, but for the warp-specialized
    /// tiles: they take an expert's items one after the other, so its weights come from DRAM
    /// once and then from the L2, and beside them on the side stream its cuBLAS GEMMs held the
    /// SMs the routed gate_up waited for. With fp8 experts (it stays bf16) only the fp8 16-row
    /// tiles take it, over its bf16 weights (csrc/moe_stream.cu, moe_fp8_m16).
    fn shared_in_items(&self, m: &MoeWeights, rows: usize) -> bool {
        let Some(s) = &m.shared else { return false };
        let bf16 = matches!(m.gate, ExpertMatrix::Bf16(_));
        let tile_m = self.tile_rows(m, rows);
        let fp8_m16 = !bf16 && tile_m == MOE_BM_SMALL && self.fp8_m16_tiles();
        let ws = self.ws_tiles(tile_m) && self.expert_maps.iter().flatten().any(|mp| mp.shared);
        let max_items = self.opts.shared_expert_items.unwrap_or(if ws { usize::MAX } else { SHARED_STREAM_MAX_ITEMS });
        (bf16 || fp8_m16) && s.inter == self.cfg.moe_intermediate_size && rows.div_ceil(tile_m) <= max_items
    }

    /// How fp8 experts' 64-row items run (`CudaOptions::fp8_activations` where wgmma is, then
    /// `fp8_codes_in_registers`).
    fn fp8_m64_tiles(&self) -> Fp8Tiles {
        match (self.opts.fp8_activations && self.wgmma, self.opts.fp8_codes_in_registers) {
            (true, _) => Fp8Tiles::W8a8,
            (false, true) => Fp8Tiles::Registers,
            (false, false) => Fp8Tiles::SharedMemory,
        }
    }

    /// Whether fp8 experts' 16-row items take the fp8 tiles (`CudaOptions::fp8_m16_tiles`, by
    /// default) rather than the weight stream.
    fn fp8_m16_tiles(&self) -> bool {
        self.opts.fp8_m16_tiles.unwrap_or(true)
    }

    /// Whether gate_up's warp-specialized tiles over 128-row items take 192-row units at `rows`
    /// rows (CudaOptions::moe_gate_up_m192; by default from M192_MIN_ROWS rows an expert).
    fn gate_up_m192(&self, rows: usize) -> bool {
        let c = &self.cfg;
        gate_up_m192_units(rows * c.num_experts_per_tok, c.num_experts, self.opts.moe_gate_up_m192)
    }

    /// Whether items of `tile_m` rows take the warp-specialized tiles (where the layer's tensor
    /// maps are at hand): by default for 64- and 128-row items (`CudaOptions::moe_ws_tiles`).
    fn ws_tiles(&self, tile_m: usize) -> bool {
        self.wgmma && self.opts.moe_ws_tiles.unwrap_or(true) && tile_m != MOE_BM_SMALL
    }

    /// The gate_up weight stream's L2 hints (MoeGemmParams::prefetch_ahead) over `k` inputs:
    /// STREAM_PREFETCH_AHEAD chunks ahead where each of the CTA's warps walks at least
    /// STREAM_PREFETCH_MIN_CHUNKS chunks (csrc/params.h says what was measured), else none;
    /// `CudaOptions::stream_prefetch` forces the distance (0: none) wherever the stream runs.
    fn gate_up_prefetch(&self, k: usize, fp8: bool) -> i32 {
        let chunk = if fp8 { STREAM_CHUNK_FP8 } else { STREAM_CHUNK_BF16 };
        let long = k.div_ceil(chunk) >= STREAM_PREFETCH_MIN_CHUNKS * STREAM_GATE_UP_WK;
        self.opts.stream_prefetch.unwrap_or(if long { STREAM_PREFETCH_AHEAD } else { 0 }) as i32
    }

    /// The MoE layer over `x`'s rows, left in its expert slots: the next input norm sums them
    /// (add_moe_rms_norm), other readers through [`Self::combined`].
    pub(super) fn moe(&self, m: &MoeWeights, layer: usize, x: &CudaSlice<u16>, rows: usize, batch: &StepBatch) -> Result<MoeSlots> {
        if let Some(br) = self.cfg.block_routing() {
            // The kernel cuts the rows into consecutive routing blocks: the batch's own blocks
            // (per run, StepBatch::routing_blocks) must be those, as they are when every run but
            // the last covers whole blocks (the engine's runs always do).
            let blocks = batch.routing_blocks(br.block)?;
            let flat = blocks.iter().enumerate().all(|(i, r)| r.start == i * br.block && r.end == rows.min((i + 1) * br.block));
            if !flat || blocks.last().map_or(0, |r| r.end) != rows {
                bail!("block routing on CUDA: a run other than the batch's last ends inside a routing block of {}", br.block);
            }
        }
        let c = &self.cfg;
        let (h, im, e) = (c.hidden_size, c.moe_intermediate_size, c.num_experts);
        let MoeShape { shared_in_items, topk, experts, slots, tile_m, max_items } = self.moe_shape(m, rows);
        // With the shared expert among the items it is expert number e, every token's last pick.
        let shared = if shared_in_items { m.shared.as_ref() } else { None };
        // The layer's buffers, allocated before its post-attention norm where that norm ran just
        // before for this layer and these rows (MoeBuffers); here otherwise (an op on its own).
        let prepared = self.moe_prepared.borrow_mut().take().filter(|b| b.layer == layer && b.rows == rows);
        let MoeBuffers { act, slot_out, perm, counts, counts_zeroed, route, .. } = match prepared {
            Some(b) => b,
            None => self.moe_buffers(layer, rows)?.ok_or_else(|| anyhow::anyhow!("layer {layer} is dense"))?,
        };
        // The shared expert, when it is not among the items, runs on the side stream beside the
        // router and the routed experts: its cuBLAS GEMMs fill few SMs at these rows (32 CTAs for
        // gate_up at batch 16) and wait on nothing but x. Its buffers come first, on the main
        // stream; moe_combine, which adds the slots to its output, waits for it (the join).
        let beside = match (&m.shared, shared) {
            (Some(s), None) => {
                let b = self.mlp_buffers(s, rows)?;
                let y = self.alloc_f32(rows * h, "mlp down")?;
                let forked = self.k.beside(|| self.dense_mlp_into(s, x, rows, &b, MlpOut::Own(&y)))?;
                Some((b, y, forked))
            }
            _ => None,
        };
        let recording = self.routing.borrow().is_some();
        // The kernels and their programmatic edges (kernels.rs, launch_dependent): moe_route
        // after the post-attention norm, gate_up after moe_permute, down after gate_up. A
        // dependent's edge is to the stream's node before it, so every buffer is allocated before
        // that norm (MoeBuffers) and freed after the layer (MoeScratch): no allocation or free
        // lies between two kernels of the layer.
        let fp8 = matches!(m.gate, ExpertMatrix::Fp8 { .. });
        // The warp-specialized tiles (by default for 64- and 128-row items) read the weights through the
        // layer's tensor maps, the shared expert's too where it is among the items.
        let maps =
            self.expert_maps.get(layer).and_then(|mp| mp.as_ref()).filter(|mp| self.ws_tiles(tile_m) && (shared.is_none() || mp.shared));
        let [gate_up, down] =
            expert_gemms(tile_m, fp8, self.wgmma, maps.is_some(), self.gate_up_m192(rows), self.fp8_m16_tiles(), self.fp8_m64_tiles());
        let pdl = self.opts.expert_pdl && self.wgmma;
        // The one-warpgroup tiles (csrc/moe_gemm.cu, moe_gemm_bf16).
        let tiles = matches!(gate_up.kernel, Kernel::MoeGateUpM64 | Kernel::MoeGateUpM128);
        let shared_pick = shared.map(|_| e);
        let mut held_counts = None;
        let routed = if let Some(mut counts) = counts {
            if !counts_zeroed {
                self.k.stream.memset_zeros(&mut counts.counts).map_err(CudaError::driver(|| "zeroing the expert pick counts".into()))?;
            }
            let counts = held_counts.insert(counts);
            let routed = self.router(m, x, rows, shared_pick, Some(counts), recording, route)?;
            let p = PermuteParams {
                topk_ids: self.p(&routed.ids),
                topk_w: self.p(&routed.wts),
                counts: self.p(&counts.counts),
                pick_pos: self.p(&counts.pick_pos),
                slot_token: self.p(&perm.slot_token),
                slot_weight: self.p(&perm.slot_weight),
                tok_slot: self.p(&perm.tok_slot),
                items: self.p(&perm.items),
                num_items: self.p(&perm.num_items),
                tokens: rows as i32,
                topk: topk as i32,
                experts: experts as i32,
                tile_m: tile_m as i32,
            };
            self.k.launch(Kernel::MoePermute, (slots.div_ceil(PERMUTE_THREADS).max(1) as u32, 1, 1), PERMUTE_THREADS as u32, &p)?;
            routed
        } else {
            // The router and the permute in one launch (moe_route's cluster counts the picks).
            self.fused_route(m, x, rows, shared_pick, None, Some((&perm, tile_m)), route)?
        };
        if recording {
            let r = self.read_routing(layer, m, &routed, rows, topk)?;
            if let Some(rec) = self.routing.borrow_mut().as_mut() {
                rec.push(r);
            }
        }
        if let (true, Some(group)) = (self.opts.check_tp_routing, &self.tp.group) {
            let mine: Vec<f32> = self.download(&routed.ids, "router ids (rank check)")?.into_iter().map(|i| i as f32).collect();
            if group.all_gather(self.tp.shard.rank, &mine)?.iter().any(|other| *other != mine) {
                bail!("tensor-parallel ranks routed this MoE layer's tokens differently");
            }
        }
        if let Some(t) = self.touched.borrow_mut().as_mut() {
            let mut seen = vec![false; e];
            for id in self.download(&routed.ids, "router ids (expert count)")? {
                if let Some(s) = seen.get_mut(id as usize) {
                    *s = true;
                }
            }
            t.push(seen.iter().filter(|&&s| s).count());
        }
        let Permuted { slot_token, slot_weight, tok_slot, items, num_items } = perm;
        let mut g = MoeGemmParams {
            x: self.p(x),
            act_out: self.p(&act),
            slot_out: 0,
            slot_token: self.p(&slot_token),
            slot_weight: self.p(&slot_weight),
            items: self.p(&items),
            num_items: self.p(&num_items),
            // gate_up's unit counter; down's is the next (the warp-specialized tiles take their
            // units from it).
            unit_counter: self.p(&num_items) + std::mem::size_of::<i32>() as u64,
            shared_expert: -1,
            n: im as i32,
            k: h as i32,
            max_items: max_items as i32,
            prefetch_ahead: self.gate_up_prefetch(h, matches!(m.gate, ExpertMatrix::Fp8 { .. })),
            ..Default::default()
        };
        self.set_weights(&mut g, &m.gate, Some(&m.up));
        // W8A8: x's codes and scales for gate_up now, act's after it (the buffers are allocated
        // after the router's launches: gate_up and down then follow plain launches).
        let w8a8 = if matches!(gate_up.kernel, Kernel::MoeGateUpM64W8a8) {
            let groups = |cols: usize| cols.div_ceil(crate::fp8::BLOCK);
            let q = W8a8Scratch {
                x_codes: self.k.alloc::<u8>(rows * h, "W8A8 x codes")?,
                x_scales: self.k.alloc::<f32>(rows * groups(h), "W8A8 x scales")?,
                act_codes: self.k.alloc::<u8>(slots * im, "W8A8 act codes")?,
                act_scales: self.k.alloc::<f32>(slots * groups(im), "W8A8 act scales")?,
            };
            launch_quantize_rows(&self.k, self.p(x), self.p(&q.x_codes), self.p(&q.x_scales), rows, h)?;
            (g.x_fp8, g.x_scale) = (self.p(&q.x_codes), self.p(&q.x_scales));
            Some(q)
        } else {
            None
        };
        if let Some(s) = shared {
            g.shared_expert = e as i32;
            (g.shared_w1, g.shared_w2) = self.gate_and_up(s);
            // Among the fp8 16-row tiles' items its bf16 CTAs read twice an fp8 CTA's bytes:
            // taken first, they are not the tail of either launch (CudaOptions::shared_items_first).
            if self.opts.shared_items_first && matches!(gate_up.kernel, Kernel::MoeGateUpFp8M16) {
                g.shared_items_first = rows.div_ceil(tile_m) as i32;
            }
        }
        if let Some(mp) = maps {
            (g.w1_map, g.w2_map) = (mp.at(self, 0), mp.at(self, 1));
            if shared.is_some() {
                (g.shared_w1_map, g.shared_w2_map) = (mp.at(self, 3), mp.at(self, 4));
            }
        }
        let gate_up_grid = gate_up.grid(&self.k, im, max_items)?;
        // Down's CTAs (the fp8 16-row tiles, the one-warpgroup wgmma tiles, the warp-specialized
        // tiles' producers) wait for their item's gate_up work alone (it counts itself in the
        // item's counter), not for gate_up's end: CudaOptions::item_wait. (The warp-specialized
        // tiles run only where wgmma is; the one-warpgroup tiles elsewhere have no wait.)
        let ws = matches!(gate_up.kernel, Kernel::MoeGateUpM64Ws | Kernel::MoeGateUpM128Ws | Kernel::MoeGateUpM192Ws);
        let item_wait = self.opts.item_wait
            && (matches!(gate_up.kernel, Kernel::MoeGateUpFp8M16 | Kernel::MoeGateUpM64Fp8Ra) || ws || (tiles && self.wgmma));
        if item_wait {
            g.item_done = self.p(&num_items) + ((1 + MOE_UNIT_COUNTERS) * std::mem::size_of::<i32>()) as u64;
        }
        // The tiles' gate_up as moe_permute's dependent (held_counts: moe_permute ran): its CTAs
        // take their SMs during the permute and wait there for its end (moe_gemm_bf16); steps 2%
        // faster at batch 8 (docs/PERF.md, session 30). Not after a permuting moe_route (batch 1
        // measured 2-4% slower with moe_route releasing as it starts, level with it releasing
        // after its selection), nor with the shared expert's GEMMs beside (batch 16 1% slower,
        // likely because the waiting CTAs hold SMs those would take).
        if pdl && tiles && held_counts.is_some() && beside.is_none() {
            self.k.launch_dependent(gate_up.kernel, gate_up_grid, gate_up.threads, gate_up.smem, &g)?;
        } else {
            self.k.launch_smem(gate_up.kernel, gate_up_grid, gate_up.threads, gate_up.smem, &g)?;
        }
        g.x = self.p(&act);
        if let Some(q) = &w8a8 {
            launch_quantize_rows(&self.k, self.p(&act), self.p(&q.act_codes), self.p(&q.act_scales), slots, im)?;
            (g.x_fp8, g.x_scale) = (self.p(&q.act_codes), self.p(&q.act_scales));
        }
        self.set_weights(&mut g, &m.down, None);
        g.act_out = 0;
        g.prefetch_ahead = 0; // the down streams measured level with it
        g.slot_out = self.p(&slot_out);
        g.unit_counter += std::mem::size_of::<i32>() as u64;
        if item_wait {
            // gate_up's counts an item: a CTA a column tile; the warp-specialized tiles count
            // each consumer warpgroup's share of a unit (one unit a column tile).
            g.item_done_target = if ws { (MOE_WS_WGS * im.div_ceil(MOE_WS_GATE_UP_COLS)) as i32 } else { gate_up_grid.0 as i32 };
        }
        g.n = h as i32;
        g.k = im as i32;
        if let Some(mp) = maps {
            (g.w1_map, g.w2_map) = (mp.at(self, 2), 0);
            if shared.is_some() {
                (g.shared_w1_map, g.shared_w2_map) = (mp.at(self, 5), 0);
            }
        }
        if let Some(s) = shared {
            g.shared_w1 = self.p(&s.down);
            g.shared_w2 = 0;
        }
        let down_grid = down.grid(&self.k, h, max_items)?;
        // (The warp-specialized down only with item counters: its producers wait for an item's
        // gate_up units before they copy its act rows, where it has no pdl_wait.)
        let dependent = matches!(
            down.kernel,
            Kernel::MoeDownStream
                | Kernel::MoeDownStreamFp8
                | Kernel::MoeDownFp8M16
                | Kernel::MoeDownM64
                | Kernel::MoeDownM128
                | Kernel::MoeDownM64Fp8Ra
        ) || (item_wait && ws);
        if pdl && dependent {
            // The weight streams, the fp8 16-row tiles and the one-warpgroup wgmma tiles: down
            // starts its weights during gate_up's tail (csrc/moe_stream.cu, csrc/moe_gemm.cu's
            // moe_gemm_wgmma).
            self.k.launch_dependent(down.kernel, down_grid, down.threads, down.smem, &g)?;
        } else {
            self.k.launch_smem(down.kernel, down_grid, down.threads, down.smem, &g)?;
        }
        // The shared expert's output, once its stream has joined this one (its other buffers
        // drop at the end of this arm, after the join: the main stream frees them once the side
        // stream's work is done).
        let shared = match beside {
            Some((b, y, forked)) => {
                if forked {
                    self.k.join_side()?;
                }
                drop(b);
                Some(y)
            }
            None => None,
        };
        let scratch = MoeScratch {
            _routed: routed,
            _counts: held_counts,
            _perm: [slot_token, items, num_items],
            _slot_weight: slot_weight,
            _act: act,
            _w8a8: w8a8,
        };
        Ok(MoeSlots { slot_out, tok_slot, topk, shared, _scratch: Box::new(scratch) })
    }

    /// moe_combine: a MoE layer's slots summed into a new f32 output, the shared expert's output
    /// added where that ran beside them.
    pub(super) fn combined(&self, m: &MoeSlots, rows: usize) -> Result<CudaSlice<f32>> {
        let h = self.cfg.hidden_size;
        let y = self.k.alloc::<f32>(rows * h, "MoE output")?;
        let p = CombineParams {
            y: self.p(&y),
            base: m.shared.as_ref().map_or(0, |s| self.p(s)),
            slot_out: self.p(&m.slot_out),
            tok_slot: self.p(&m.tok_slot),
            tokens: rows as i32,
            topk: m.topk as i32,
            hidden: h as i32,
        };
        let chunks = h.div_ceil(COMBINE_THREADS * COMBINE_COLS) as u32;
        self.k.launch(Kernel::MoeCombine, (rows as u32, chunks, 1), COMBINE_THREADS as u32, &p)?;
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_cta_sizes() {
        // 132 SMs (H200): batch 16's 512 rows, batch 64's 2,048, a 4,096-token prefill, a forward of 8,192.
        assert_eq!(select_warps(0, 132), 4);
        assert_eq!(select_warps(512, 132), 4);
        assert_eq!(select_warps(2048, 132), 8);
        assert_eq!(select_warps(4128, 132), 16);
        assert_eq!(select_warps(8192, 132), ROUTER_SELECT_MAX_WARPS);
    }

    #[test]
    fn fp8_items_of_64_rows_from_12_rows_an_expert_or_fewer_as_w8a8() {
        // Mini's 256 experts, top 8: batch 8 (256 rows) averages 8 rows an expert, batch 16 16.
        let (slots, experts) = (|batch: usize| batch * 32 * 8, 256);
        let w8a16 = m64_min_rows(Some(Fp8Tiles::Registers), 2048);
        assert_eq!(moe_tile_rows(slots(8), experts, None, false, w8a16), MOE_BM_SMALL);
        assert_eq!(moe_tile_rows(slots(16), experts, None, false, w8a16), MOE_BM_LARGE);
        assert_eq!(moe_tile_rows(slots(16), experts, Some(MOE_BM_SMALL), false, w8a16), MOE_BM_SMALL);
        // W8A8 at mini's width (2048) from 8 rows an expert: batch 8 up, batch 4 on the 16-row
        // W8A16 tiles; at flash's (4096, its 256 experts top 8 too) from 4: batch 4 up.
        let (mini, flash) = (m64_min_rows(Some(Fp8Tiles::W8a8), 2048), m64_min_rows(Some(Fp8Tiles::W8a8), 4096));
        assert_eq!(moe_tile_rows(slots(4), experts, None, false, mini), MOE_BM_SMALL);
        assert_eq!(moe_tile_rows(slots(8), experts, None, false, mini), MOE_BM_LARGE);
        assert_eq!(moe_tile_rows(slots(2), experts, None, false, flash), MOE_BM_SMALL);
        assert_eq!(moe_tile_rows(slots(4), experts, None, false, flash), MOE_BM_LARGE);
        // On Hopper the 64-row fp8 items take the register tiles unless told otherwise.
        let kernels = |tiles| expert_gemms(MOE_BM_LARGE, true, true, false, false, true, tiles).map(|g| g.kernel);
        assert_eq!(kernels(Fp8Tiles::Registers), [Kernel::MoeGateUpM64Fp8Ra, Kernel::MoeDownM64Fp8Ra]);
        assert_eq!(kernels(Fp8Tiles::SharedMemory), [Kernel::MoeGateUpM64Fp8, Kernel::MoeDownM64Fp8]);
        assert_eq!(kernels(Fp8Tiles::W8a8), [Kernel::MoeGateUpM64W8a8, Kernel::MoeDownM64W8a8]);
        // 16-row items stay W8A16 either way.
        assert_eq!(expert_gemms(MOE_BM_SMALL, true, true, false, false, true, Fp8Tiles::W8a8)[0].kernel, Kernel::MoeGateUpFp8M16);
    }

    #[test]
    fn gate_up_takes_192_row_units_from_96_rows_an_expert() {
        // Mini's 256 experts, top 8: batch 64 averages 64 rows an expert, 96 at 96, 128 at 128.
        let slots = |batch: usize| batch * 32 * 8;
        assert!(!gate_up_m192_units(slots(64), 256, None));
        assert!(gate_up_m192_units(slots(96), 256, None));
        assert!(gate_up_m192_units(slots(128), 256, None));
        assert!(!gate_up_m192_units(slots(128), 256, Some(false)));
        assert!(gate_up_m192_units(slots(1), 256, Some(true)));
        // Only the warp-specialized gate_up over 128-row bf16 items takes them; down keeps its
        // 128-row units, and the one-warpgroup tiles (no tensor maps) ignore the choice.
        let kernels = |ws| expert_gemms(MOE_BM_XLARGE, false, true, ws, true, true, Fp8Tiles::W8a8).map(|g| g.kernel);
        assert_eq!(kernels(true), [Kernel::MoeGateUpM192Ws, Kernel::MoeDownM128Ws]);
        assert_eq!(kernels(false), [Kernel::MoeGateUpM128, Kernel::MoeDownM128]);
        let m64 = expert_gemms(MOE_BM_LARGE, false, true, true, true, true, Fp8Tiles::W8a8).map(|g| g.kernel);
        assert_eq!(m64, [Kernel::MoeGateUpM64Ws, Kernel::MoeDownM64Ws]);
    }

    #[test]
    fn register_selection_takes_grouped_routers_of_up_to_256_experts() {
        let mut c = crate::config::preset("mini").unwrap();
        assert!(select_fits(&c) && route_fits(&c)); // 256 experts in 8 groups of 32
        c.num_experts = 48;
        c.n_group = 2; // groups of 24: not a power of two
        assert!(!select_fits(&c));
        c.num_experts = 512;
        c.n_group = 8; // more experts than a warp's registers hold
        assert!(!select_fits(&c));
    }
}
