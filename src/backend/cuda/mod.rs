//! The CUDA backend: every op of [`Backend`] runs on the GPU from the kernels in `csrc/`
//! (cuBLAS only for the plain dense GEMMs: QKV, attention out, dense MLP / shared expert,
//! lm_head). Activations: the residual stream and GEMM outputs are f32, GEMM inputs (norm
//! and attention outputs) bf16; weights and the KV cache are bf16; accumulation is fp32.

mod ceiling;
pub mod kernels;
pub mod kv_cache;
pub mod weights;

use super::{Backend, Linear, Norm, StepBatch};
use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::decode::Pick;
use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::{CudaContext, CudaSlice};
use kernels::{params::*, ptr, Kernels};
use kv_cache::PagePool;
use std::sync::Arc;
use weights::{Ffn, Weights};

#[derive(Debug, Clone)]
pub struct CudaOptions {
    /// Fraction of the device memory free after the weights that the KV cache takes.
    pub mem_fraction_static: f32,
    /// Positions per KV page; a multiple of the usual block size.
    pub page_size: usize,
    /// Cap on the KV cache (tests, several backends in one process).
    pub max_kv_bytes: Option<usize>,
    pub device: usize,
    /// Fill every activation with NaN when it is allocated (tests: unwritten outputs show).
    pub poison: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        // DLLM_MEM_FRACTION_STATIC overrides the KV fraction (e.g. a small cache under compute-sanitizer).
        let frac = std::env::var("DLLM_MEM_FRACTION_STATIC").ok().and_then(|v| v.parse().ok()).unwrap_or(0.85);
        CudaOptions { mem_fraction_static: frac, page_size: 32, max_kv_bytes: None, device: 0, poison: false }
    }
}

/// A device activation `[rows, cols]`, row-major.
pub struct CudaAct {
    pub rows: usize,
    pub cols: usize,
    pub data: ActData,
}

pub enum ActData {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<u16>),
}

/// The per-token layout of the last step batch on the device (shared by all layers).
struct StepLayout {
    runs: Vec<super::SeqRun>,
    positions: Vec<u32>,
    tok_pos: CudaSlice<i32>,
    tok_pt: CudaSlice<i32>,
    tok_limit: CudaSlice<i32>,
    page_table: CudaSlice<i32>,
    /// Attention query tiles (first token, tokens), none spanning two runs.
    tiles: CudaSlice<i32>,
    num_tiles: usize,
    /// The largest key limit of the batch.
    max_limit: usize,
}

pub struct CudaBackend {
    pub cfg: ModelConfig,
    pub opts: CudaOptions,
    ctx: Arc<CudaContext>,
    k: Kernels,
    w: Weights,
    kv: CudaSlice<u16>,
    pool: PagePool,
    step: Option<StepLayout>,
    device_name: String,
    sm_count: usize,
    /// Distinct experts per MoE layer of the current forward, when counting (benchmarks).
    touched: std::cell::RefCell<Option<Vec<usize>>>,
}

/// csrc/moe_gemm.cu: output columns per CTA, k per stage, padded row length.
const GEMM_BN: usize = 64;
const GEMM_LDS: usize = 64 + 8;

/// The grouped GEMM's rows per work item (its BM): 64 once the experts average 12 or more rows
/// (one item then reads an expert's weights once where 16-row items read them once per 16
/// rows), else 16 (few rows per expert: less padding, the same weight stream). A 128-row
/// variant measured slower at batch 64 (2026-11-26, H200: gate_up 9.5 ms a step against 8.5
/// for 64 rows): with 2 CTAs an SM its WMMA loop is issue-bound before the weight re-reads
/// it saves matter.
fn moe_tile_rows(slots: usize, experts: usize) -> usize {
    if slots >= 12 * experts {
        64
    } else {
        16
    }
}

/// csrc/moe_gemm.cu `Smem<BM, GATED>::bytes`.
fn moe_gemm_smem(bm: usize, gated: bool) -> usize {
    let w = if gated { 2 } else { 1 };
    let stage = (bm * GEMM_LDS + GEMM_BN * GEMM_LDS * w) * 2;
    (2 * stage).max(bm * (GEMM_BN + 4) * 4 * w)
}
/// csrc/attention.cu: ATT_ROWS query rows per tile, ATT_KC keys per chunk, shared memory size.
const ATT_ROWS: usize = 64;
const ATT_KC: usize = 32;
/// csrc/attention.cu `att_smem_layout(d).total`.
fn att_smem_bytes(d: usize) -> usize {
    let (ld, a) = (d + 8, |x: usize| x.div_ceil(128) * 128);
    a(ATT_ROWS * ld * 2) + 2 * a(2 * ATT_KC * ld * 2) + a(ATT_ROWS * (ATT_KC + 4) * 4) + a(ATT_ROWS * (ATT_KC + 8) * 2) + a(ATT_ROWS * 4)
}

impl CudaBackend {
    pub fn load(ck: &Checkpoint, opts: &CudaOptions) -> Result<Self> {
        Self::build(ck.config.clone(), opts, |k, c| weights::load(k, c, &mut weights::FromCheckpoint(ck)))
    }

    /// bf16 random weights made on the device (shapes like the `mini` preset that cannot be shipped).
    pub fn random(cfg: ModelConfig, seed: u64, opts: &CudaOptions) -> Result<Self> {
        Self::build(cfg, opts, |k, c| weights::load(k, c, &mut weights::Random { cfg: c, seed, counter: 0 }))
    }

    fn build(cfg: ModelConfig, opts: &CudaOptions, make: impl FnOnce(&Kernels, &ModelConfig) -> Result<Weights>) -> Result<Self> {
        check_shapes(&cfg)?;
        if opts.page_size == 0 {
            bail!("page_size must be > 0");
        }
        let ctx = open_device(opts.device)?;
        let device_name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let sm_count = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map(|n| n.max(1) as usize)
            .unwrap_or(132);
        let k = Kernels::new(&ctx)?;
        let w = make(&k, &cfg).context("putting the weights on the GPU")?;
        k.sync("weight upload")?;
        let (free, _total) = ctx.mem_get_info().map_err(|e| anyhow!("cuMemGetInfo: {e:?}"))?;
        let page_bytes = opts.page_size * cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim() * 2;
        let mut budget = (free as f64 * opts.mem_fraction_static as f64) as usize;
        if let Some(cap) = opts.max_kv_bytes {
            budget = budget.min(cap);
        }
        let num_pages = budget / page_bytes;
        if num_pages == 0 {
            bail!("no GPU memory left for the KV cache ({} MiB free after the weights)", free >> 20);
        }
        let kv = k.alloc::<u16>(num_pages * page_bytes / 2, "the KV cache")?;
        Ok(CudaBackend {
            pool: PagePool::new(num_pages, opts.page_size),
            cfg,
            opts: opts.clone(),
            ctx,
            k,
            w,
            kv,
            step: None,
            device_name,
            sm_count,
            touched: Default::default(),
        })
    }

    pub fn kv_pages(&self) -> (usize, usize) {
        (self.pool.free_pages(), self.pool.num_pages)
    }

    /// Per-kernel wall time (DLLM_PROFILE_KERNELS=1): (name, total ms, calls).
    pub fn profile(&self) -> Vec<(String, f64, u64)> {
        self.k.profile()
    }

    pub fn profile_reset(&self) {
        self.k.profile_reset()
    }

    pub fn synchronize(&self) -> Result<()> {
        self.k.sync("synchronize")
    }

    fn p<T>(&self, s: &CudaSlice<T>) -> u64 {
        ptr(s, &self.k.stream)
    }

    fn alloc_f32(&self, n: usize, what: &str) -> Result<CudaSlice<f32>> {
        let b = self.k.alloc::<f32>(n, what)?;
        if self.opts.poison {
            self.nan_fill(self.p(&b), 0, n)?;
        }
        Ok(b)
    }

    fn alloc_bf16(&self, n: usize, what: &str) -> Result<CudaSlice<u16>> {
        let b = self.k.alloc::<u16>(n, what)?;
        if self.opts.poison {
            self.nan_fill(0, self.p(&b), n)?;
        }
        Ok(b)
    }

    fn nan_fill(&self, f: u64, bf: u64, n: usize) -> Result<()> {
        let p = InitParams {
            out_bf16: bf,
            out_f32: f,
            n_lo: n as u32,
            n_hi: (n as u64 >> 32) as u32,
            mean: f32::NAN,
            std: 0.0,
            ..Default::default()
        };
        self.k.launch("init_normal", (n.div_ceil(256).min(65536) as u32, 1, 1), 256, &p)
    }

    fn upload<T: cudarc::driver::DeviceRepr>(&self, v: &[T], what: &str) -> Result<CudaSlice<T>> {
        if v.is_empty() {
            return self.k.alloc::<T>(1, what);
        }
        self.k.stream.clone_htod(v).map_err(|e| anyhow!("uploading {what}: {e:?}"))
    }

    fn download<T: cudarc::driver::DeviceRepr>(&self, s: &CudaSlice<T>, what: &str) -> Result<Vec<T>> {
        self.k.stream.clone_dtoh(s).map_err(|e| anyhow!("downloading {what} (a kernel before it may have failed): {e:?}"))
    }

    // ---- host <-> device activations (tests, tools) ---------------------------------------

    pub fn act_from_f32(&self, rows: usize, cols: usize, v: &[f32]) -> Result<CudaAct> {
        assert_eq!(v.len(), rows * cols);
        Ok(CudaAct { rows, cols, data: ActData::F32(self.upload(v, "an f32 activation")?) })
    }

    /// Rounds to bf16.
    pub fn act_from_f32_as_bf16(&self, rows: usize, cols: usize, v: &[f32]) -> Result<CudaAct> {
        assert_eq!(v.len(), rows * cols);
        let bits: Vec<u16> = v.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect();
        Ok(CudaAct { rows, cols, data: ActData::Bf16(self.upload(&bits, "a bf16 activation")?) })
    }

    pub fn act_to_f32(&self, a: &CudaAct) -> Result<Vec<f32>> {
        Ok(match &a.data {
            ActData::F32(s) => self.download(s, "an activation")?,
            ActData::Bf16(s) => self.download(s, "an activation")?.into_iter().map(|b| half::bf16::from_bits(b).to_f32()).collect(),
        })
    }

    fn f32_of<'a>(&self, a: &'a CudaAct, op: &str) -> Result<&'a CudaSlice<f32>> {
        match &a.data {
            ActData::F32(s) => Ok(s),
            ActData::Bf16(_) => bail!("{op}: expected an f32 activation, got bf16"),
        }
    }

    fn bf16_of<'a>(&self, a: &'a CudaAct, op: &str) -> Result<&'a CudaSlice<u16>> {
        match &a.data {
            ActData::Bf16(s) => Ok(s),
            ActData::F32(_) => bail!("{op}: expected a bf16 activation, got f32"),
        }
    }

    /// The step's per-token layout on the device; rebuilt only when the batch changes.
    fn layout(&mut self, batch: &StepBatch) -> Result<()> {
        if let Some(s) = &self.step {
            if s.runs == batch.runs && s.positions == batch.positions {
                return Ok(());
            }
        }
        let mut page_table: Vec<i32> = vec![];
        let (mut tok_pos, mut tok_pt, mut tok_limit) = (vec![], vec![], vec![]);
        let limits = batch.key_limits();
        let mut row = 0;
        let mut tiles: Vec<i32> = vec![];
        let tile_tokens = (ATT_ROWS / (self.cfg.num_attention_heads / self.cfg.num_key_value_heads)).max(1);
        for r in &batch.runs {
            for t0 in (0..r.len).step_by(tile_tokens) {
                tiles.push((row + t0) as i32);
                tiles.push(tile_tokens.min(r.len - t0) as i32);
            }
            let table = self.pool.table(r.slot)?;
            let cap = table.len() * self.pool.page_size;
            if r.start + r.len > cap {
                bail!("positions up to {} are beyond the sequence's KV reservation ({cap})", r.start + r.len);
            }
            let off = page_table.len() as i32;
            page_table.extend(table.iter().map(|&p| p as i32));
            for _ in 0..r.len {
                tok_pos.push(batch.positions[row] as i32);
                tok_pt.push(off);
                tok_limit.push(limits[row].1 as i32);
                row += 1;
            }
        }
        let num_tiles = tiles.len() / 2;
        let tiles = self.upload(&tiles, "attention tiles")?;
        self.step = Some(StepLayout {
            tiles,
            num_tiles,
            max_limit: tok_limit.iter().copied().max().unwrap_or(0) as usize,
            runs: batch.runs.clone(),
            positions: batch.positions.clone(),
            tok_pos: self.upload(&tok_pos, "token positions")?,
            tok_pt: self.upload(&tok_pt, "page-table offsets")?,
            tok_limit: self.upload(&tok_limit, "key limits")?,
            page_table: self.upload(&page_table, "page tables")?,
        });
        Ok(())
    }

    /// `y[rows, n] = x w^T` (cuBLAS), f32 out.
    fn gemm(&self, what: &str, x: &CudaSlice<u16>, w: &CudaSlice<u16>, rows: usize, n: usize, k: usize) -> Result<CudaSlice<f32>> {
        let y = self.alloc_f32(rows * n, what)?;
        self.k.gemm_bf16_f32(what, self.p(x), self.p(w), self.p(&y), rows, n, k, 0.0)?;
        Ok(y)
    }

    fn dense_mlp(&self, m: &weights::DenseMlp, x: &CudaSlice<u16>, rows: usize) -> Result<CudaSlice<f32>> {
        let h = self.cfg.hidden_size;
        let gu = self.gemm("mlp gate_up", x, &m.gate_up, rows, 2 * m.inter, h)?;
        let act = self.alloc_bf16(rows * m.inter, "mlp activation")?;
        let p = SiluMulParams { gu: self.p(&gu), out: self.p(&act), rows: rows as i32, inter: m.inter as i32 };
        self.k.launch("silu_mul", ((rows * m.inter).div_ceil(256).min(65536) as u32, 1, 1), 256, &p)?;
        self.gemm("mlp down", &act, &m.down, rows, h, m.inter)
    }

    /// Router only: (expert ids, weights) per row, `[rows * topk]` each (tests).
    pub fn route(&mut self, h: &CudaAct, layer: usize) -> Result<(Vec<i32>, Vec<f32>)> {
        let Ffn::Moe(m) = &self.w.layers[layer].ffn else { bail!("layer {layer} is dense") };
        let x = self.bf16_of(h, "route")?;
        let (ids, wts) = self.router(m, x, h.rows)?;
        Ok((self.download(&ids, "router ids")?, self.download(&wts, "router weights")?))
    }

    fn router(&self, m: &weights::MoeWeights, x: &CudaSlice<u16>, rows: usize) -> Result<(CudaSlice<i32>, CudaSlice<f32>)> {
        let c = &self.cfg;
        let ids = self.k.alloc::<i32>(rows * c.num_experts_per_tok, "router ids")?;
        let wts = self.alloc_f32(rows * c.num_experts_per_tok, "router weights")?;
        // fp32 logits h W^T by cuBLAS (bf16 inputs, fp32 accumulate: the CPU twin's math), then
        // the selection kernel.
        let logits = self.alloc_f32(rows * c.num_experts, "router logits")?;
        self.k.gemm_bf16_f32("router logits", self.p(x), self.p(&m.router), self.p(&logits), rows, c.num_experts, c.hidden_size, 0.0)?;
        let p = RouterParams {
            logits: self.p(&logits),
            bias: self.p(&m.bias),
            topk_ids: self.p(&ids),
            topk_w: self.p(&wts),
            tokens: rows as i32,
            experts: c.num_experts as i32,
            topk: c.num_experts_per_tok as i32,
            n_group: c.n_group as i32,
            topk_group: c.topk_group as i32,
            scale: c.routed_scaling_factor,
        };
        self.k.launch("moe_router_select", (rows as u32, 1, 1), 256, &p)?;
        Ok((ids, wts))
    }

    fn moe(&self, m: &weights::MoeWeights, x: &CudaSlice<u16>, rows: usize) -> Result<CudaSlice<f32>> {
        let c = &self.cfg;
        let (h, im, e, topk) = (c.hidden_size, c.moe_intermediate_size, c.num_experts, c.num_experts_per_tok);
        let slots = rows * topk;
        let (ids, wts) = self.router(m, x, rows)?;
        if let Some(t) = self.touched.borrow_mut().as_mut() {
            let mut seen = vec![false; e];
            for id in self.download(&ids, "router ids (expert count)")? {
                if let Some(s) = seen.get_mut(id as usize) {
                    *s = true;
                }
            }
            t.push(seen.iter().filter(|&&s| s).count());
        }
        let tile_m = moe_tile_rows(slots, e);
        let max_items = e.min(slots) + slots / tile_m + 1;
        let slot_token = self.k.alloc::<i32>(slots, "slot tokens")?;
        let slot_weight = self.alloc_f32(slots, "slot weights")?;
        let tok_slot = self.k.alloc::<i32>(slots, "token slots")?;
        let items = self.k.alloc::<i32>(3 * max_items, "MoE work items")?;
        let num_items = self.k.alloc::<i32>(1, "MoE item count")?;
        let p = PermuteParams {
            topk_ids: self.p(&ids),
            topk_w: self.p(&wts),
            slot_token: self.p(&slot_token),
            slot_weight: self.p(&slot_weight),
            tok_slot: self.p(&tok_slot),
            items: self.p(&items),
            num_items: self.p(&num_items),
            tokens: rows as i32,
            topk: topk as i32,
            experts: e as i32,
            tile_m: tile_m as i32,
        };
        self.k.launch("moe_permute", (1, 1, 1), 1024, &p)?;
        let act = self.alloc_bf16(slots * im, "expert activations")?;
        let mut g = MoeGemmParams {
            x: self.p(x),
            w1: self.p(&m.gate),
            w2: self.p(&m.up),
            act_out: self.p(&act),
            f32_out: 0,
            slot_token: self.p(&slot_token),
            slot_weight: self.p(&slot_weight),
            items: self.p(&items),
            num_items: self.p(&num_items),
            n: im as i32,
            k: h as i32,
            max_items: max_items as i32,
        };
        let (gate_up, down) = match tile_m {
            64 => ("moe_gate_up_m64", "moe_down_m64"),
            _ => ("moe_gate_up", "moe_down"),
        };
        self.k.launch_smem(gate_up, (im.div_ceil(GEMM_BN) as u32, max_items as u32, 1), 128, moe_gemm_smem(tile_m, true) as u32, &g)?;
        let slot_out = self.alloc_f32(slots * h, "expert outputs")?;
        g.x = self.p(&act);
        g.w1 = self.p(&m.down);
        g.w2 = 0;
        g.act_out = 0;
        g.f32_out = self.p(&slot_out);
        g.n = h as i32;
        g.k = im as i32;
        self.k.launch_smem(down, (h.div_ceil(GEMM_BN) as u32, max_items as u32, 1), 128, moe_gemm_smem(tile_m, false) as u32, &g)?;
        let y = match &m.shared {
            Some(s) => self.dense_mlp(s, x, rows)?,
            None => {
                let mut y = self.k.alloc::<f32>(rows * h, "MoE output")?;
                self.k.stream.memset_zeros(&mut y).map_err(|e| anyhow!("memset: {e:?}"))?;
                y
            }
        };
        let p = CombineParams {
            y: self.p(&y),
            slot_out: self.p(&slot_out),
            tok_slot: self.p(&tok_slot),
            tokens: rows as i32,
            topk: topk as i32,
            hidden: h as i32,
        };
        self.k.launch("moe_combine", (rows as u32, 1, 1), 256, &p)?;
        Ok(y)
    }

    /// block_attention (+ attention_combine when the keys are split): see csrc/attention.cu.
    fn attention_kernels(&self, q: &CudaSlice<u16>, out: &CudaSlice<u16>, rows: usize, layer: usize) -> Result<()> {
        let c = &self.cfg;
        let (nh, nkv, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let s = self.step.as_ref().unwrap();
        let tiles = &s.tiles;
        // Split the keys so that ~6 CTAs per SM (two waves at 3 an SM) are launched; no split when the tiles alone fill
        // the GPU (prefill), which also skips the combine.
        let chunks = s.max_limit.div_ceil(ATT_KC).max(1);
        let per_split = s.num_tiles * nkv;
        let want_splits = (6 * self.sm_count).div_ceil(per_split.max(1)).clamp(1, chunks);
        let split_keys = chunks.div_ceil(want_splits) * ATT_KC;
        let num_splits = s.max_limit.div_ceil(split_keys).max(1);
        let (part_acc, part_ml) = if num_splits > 1 {
            (
                Some(self.k.alloc::<f32>(num_splits * rows * nh * d, "attention partials")?),
                Some(self.k.alloc::<f32>(num_splits * rows * nh * 2, "attention partial stats")?),
            )
        } else {
            (None, None)
        };
        let p = AttnParams {
            q: self.p(q),
            kv: self.p(&self.kv),
            out: self.p(out),
            page_table: self.p(&s.page_table),
            tok_pt: self.p(&s.tok_pt),
            tok_limit: self.p(&s.tok_limit),
            tiles: self.p(tiles),
            part_acc: part_acc.as_ref().map_or(0, |b| self.p(b)),
            part_ml: part_ml.as_ref().map_or(0, |b| self.p(b)),
            tokens: rows as i32,
            nh: nh as i32,
            nkv: nkv as i32,
            d: d as i32,
            page_size: self.pool.page_size as i32,
            layer: layer as i32,
            num_layers: c.num_hidden_layers as i32,
            split_keys: split_keys as i32,
            num_splits: num_splits as i32,
            scale: 1.0 / (d as f32).sqrt(),
        };
        let grid = (s.num_tiles as u32, nkv as u32, num_splits as u32);
        let kernel = if d <= 128 { "block_attention" } else { "block_attention_d256" };
        self.k.launch_smem(kernel, grid, 128, att_smem_bytes(d) as u32, &p)?;
        if num_splits > 1 {
            self.k.launch("attention_combine", (rows as u32, nh as u32, 1), 128, &p)?;
        }
        Ok(())
    }

    fn logits(&self, x: &CudaAct) -> Result<CudaSlice<f32>> {
        let xb = self.bf16_of(x, "lm_head")?;
        let w = self.w.lm_head.as_ref().unwrap_or(&self.w.embed);
        self.gemm("lm_head", xb, w, x.rows, self.cfg.vocab_size, self.cfg.hidden_size)
    }

    /// LowConfidence on the device for each request's block: `probs`/`masked` are
    /// `[requests * block]`; returns the chosen positions per request, ascending.
    pub fn unmask(&self, probs: &[f32], masked: &[bool], quotas: &[usize], block: usize, threshold: f32) -> Result<Vec<Vec<usize>>> {
        let n = quotas.len();
        if block == 0 || block > 1024 || probs.len() != n * block || masked.len() != n * block {
            bail!("unmask: bad shapes (block {block}, {n} requests)");
        }
        let pr = self.upload(probs, "unmask probs")?;
        let mk = self.upload(&masked.iter().map(|&m| m as i32).collect::<Vec<_>>(), "unmask mask")?;
        let q = self.upload(&quotas.iter().map(|&q| q as i32).collect::<Vec<_>>(), "unmask quotas")?;
        let out = self.k.alloc::<i32>(n * block, "unmask output")?;
        let p = UnmaskParams {
            prob: self.p(&pr),
            masked: self.p(&mk),
            quota: self.p(&q),
            chosen: self.p(&out),
            requests: n as i32,
            block: block as i32,
            threshold,
        };
        self.k.launch("unmask_low_confidence", (n as u32, 1, 1), (block.div_ceil(32) * 32) as u32, &p)?;
        let v = self.download(&out, "unmask output")?;
        Ok((0..n).map(|r| (0..block).filter(|&i| v[r * block + i] != 0).collect()).collect())
    }
}

/// The device's context; a missing driver library is an error, not a panic.
fn open_device(ordinal: usize) -> Result<Arc<CudaContext>> {
    // cudarc loads libcuda lazily and panics when it is absent: look for it first, so a
    // machine without a driver gets one clear line, not a panic message.
    if !driver_library_present() {
        bail!("no CUDA driver found (libcuda.so.1 could not be loaded)");
    }
    let r = std::panic::catch_unwind(|| CudaContext::new(ordinal));
    match r {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => bail!("opening CUDA device {ordinal}: {e:?}"),
        Err(_) => bail!("no CUDA driver found (libcuda.so could not be loaded)"),
    }
}

fn driver_library_present() -> bool {
    ["libcuda.so.1", "libcuda.so"].iter().any(|name| {
        // SAFETY: loading the NVIDIA driver library runs only its own initialisers; the handle
        // is dropped at once (cudarc loads it again for real).
        unsafe { libloading::Library::new(*name) }.is_ok()
    })
}

/// How many CUDA devices the driver shows (0 without a driver).
pub fn device_count() -> usize {
    if !driver_library_present() {
        return 0;
    }
    std::panic::catch_unwind(CudaContext::device_count).ok().and_then(|r| r.ok()).map_or(0, |n| n.max(0) as usize)
}

/// Whether a CUDA device can be opened (tests skip when not).
pub fn device_available() -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = open_device(0).is_ok();
    std::panic::set_hook(hook);
    ok
}

fn check_shapes(c: &ModelConfig) -> Result<()> {
    let d = c.head_dim();
    let group = c.num_attention_heads / c.num_key_value_heads;
    if d > 256 || d % 16 != 0 {
        bail!("the CUDA kernels need head_dim <= 256 and a multiple of 16 (tensor-core tiles), got {d}");
    }
    if group > 8 {
        bail!("the CUDA attention kernel supports up to 8 query heads per KV head, got {group}");
    }
    if c.hidden_size % 8 != 0 || c.moe_intermediate_size % 8 != 0 || c.hidden_size > 8192 {
        bail!("the CUDA kernels need hidden_size (<= 8192) and moe_intermediate_size to be multiples of 8");
    }
    if c.num_experts > 1024 || c.n_group > 64 {
        bail!("the CUDA router supports up to 1024 experts in up to 64 groups");
    }
    Ok(())
}

impl Backend for CudaBackend {
    type Act = CudaAct;

    fn name(&self) -> String {
        format!("cuda ({}, device {})", self.device_name, self.ctx.ordinal())
    }

    fn alloc_seq(&mut self, max_len: usize) -> Result<usize> {
        self.pool.alloc_seq(max_len)
    }

    fn free_seq(&mut self, slot: usize) {
        self.pool.free_seq(slot);
        self.step = None;
    }

    fn embed(&mut self, tokens: &[u32]) -> Result<CudaAct> {
        if let Some(t) = self.touched.get_mut().as_mut() {
            t.clear(); // a forward starts here
        }
        let (h, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= v) {
            bail!("token id {t} is outside the vocabulary ({v})");
        }
        let ids = self.upload(tokens, "token ids")?;
        self.k.hold_stream()?; // profiling: queue the forward before it runs
        let out = self.alloc_f32(tokens.len() * h, "embeddings")?;
        let p = EmbedParams {
            table: self.p(&self.w.embed),
            tokens: self.p(&ids),
            out: self.p(&out),
            rows: tokens.len() as i32,
            cols: h as i32,
            vocab: v as i32,
        };
        self.k.launch("embed_gather", (tokens.len() as u32, 1, 1), 256, &p)?;
        Ok(CudaAct { rows: tokens.len(), cols: h, data: ActData::F32(out) })
    }

    fn add_rms_norm(&mut self, x: &mut CudaAct, delta: Option<&CudaAct>, w: Norm) -> Result<CudaAct> {
        let xs = self.f32_of(x, "add_rms_norm")?;
        let dp = match delta {
            Some(d) => {
                if d.rows != x.rows || d.cols != x.cols {
                    bail!("add_rms_norm: delta is {}x{}, x is {}x{}", d.rows, d.cols, x.rows, x.cols);
                }
                self.p(self.f32_of(d, "add_rms_norm delta")?)
            }
            None => 0,
        };
        let wv = match w {
            Norm::Input(l) => &self.w.layers[l].input_norm,
            Norm::PostAttention(l) => &self.w.layers[l].post_norm,
            Norm::Final => &self.w.final_norm,
        };
        let out = self.alloc_bf16(x.rows * x.cols, "normed activations")?;
        let p = NormParams {
            x: self.p(xs),
            delta: dp,
            w: self.p(wv),
            out: self.p(&out),
            rows: x.rows as i32,
            cols: x.cols as i32,
            eps: self.cfg.rms_norm_eps,
        };
        self.k.launch("add_rms_norm", (x.rows as u32, 1, 1), 256, &p)?;
        Ok(CudaAct { rows: x.rows, cols: x.cols, data: ActData::Bf16(out) })
    }

    fn linear(&mut self, x: &CudaAct, w: Linear) -> Result<CudaAct> {
        let c = &self.cfg;
        let xb = self.bf16_of(x, "linear")?;
        let (wt, n, what) = match w {
            Linear::Qkv(l) => (&self.w.layers[l].qkv, c.qkv_rows(), "qkv"),
            Linear::AttnOut(l) => (&self.w.layers[l].dense, c.hidden_size, "attention out"),
        };
        let y = self.gemm(what, xb, wt, x.rows, n, x.cols)?;
        Ok(CudaAct { rows: x.rows, cols: n, data: ActData::F32(y) })
    }

    fn qk_norm_rope_store(&mut self, qkv: &CudaAct, layer: usize, batch: &StepBatch) -> Result<CudaAct> {
        self.layout(batch)?;
        let c = &self.cfg;
        let (nh, nkv, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let src = self.f32_of(qkv, "qk_norm_rope_store")?;
        let q = self.alloc_bf16(qkv.rows * nh * d, "q")?;
        let s = self.step.as_ref().unwrap();
        let l = &self.w.layers[layer];
        let p = RopeParams {
            qkv: self.p(src),
            q_norm: self.p(&l.q_norm),
            k_norm: self.p(&l.k_norm),
            q_out: self.p(&q),
            kv: self.p(&self.kv),
            page_table: self.p(&s.page_table),
            tok_pos: self.p(&s.tok_pos),
            tok_pt: self.p(&s.tok_pt),
            tokens: qkv.rows as i32,
            nh: nh as i32,
            nkv: nkv as i32,
            d: d as i32,
            rot: c.rotary_dim() as i32,
            page_size: self.pool.page_size as i32,
            layer: layer as i32,
            num_layers: c.num_hidden_layers as i32,
            eps: c.rms_norm_eps,
            theta: c.rope_theta,
        };
        self.k.launch("qk_norm_rope_store", (qkv.rows as u32, 1, 1), 128, &p)?;
        Ok(CudaAct { rows: qkv.rows, cols: nh * d, data: ActData::Bf16(q) })
    }

    fn attention(&mut self, q: &CudaAct, layer: usize, batch: &StepBatch) -> Result<CudaAct> {
        self.layout(batch)?;
        let c = &self.cfg;
        let (nh, d) = (c.num_attention_heads, c.head_dim());
        let qb = self.bf16_of(q, "attention")?;
        let out = self.alloc_bf16(q.rows * nh * d, "attention output")?;
        self.attention_kernels(qb, &out, q.rows, layer)?;
        Ok(CudaAct { rows: q.rows, cols: nh * d, data: ActData::Bf16(out) })
    }

    fn ffn(&mut self, x: &CudaAct, layer: usize) -> Result<CudaAct> {
        let xb = self.bf16_of(x, "ffn")?;
        let y = match &self.w.layers[layer].ffn {
            Ffn::Dense(m) => self.dense_mlp(m, xb, x.rows)?,
            Ffn::Moe(m) => self.moe(m, xb, x.rows)?,
        };
        Ok(CudaAct { rows: x.rows, cols: self.cfg.hidden_size, data: ActData::F32(y) })
    }

    fn gather_rows(&mut self, x: &CudaAct, rows: &[usize]) -> Result<CudaAct> {
        let src = self.f32_of(x, "gather_rows")?;
        if let Some(&r) = rows.iter().find(|&&r| r >= x.rows) {
            bail!("gather_rows: row {r} is out of range ({} rows)", x.rows);
        }
        let idx = self.upload(&rows.iter().map(|&r| r as i32).collect::<Vec<_>>(), "row indices")?;
        let out = self.alloc_f32(rows.len() * x.cols, "gathered rows")?;
        let p = GatherParams { src: self.p(src), rows: self.p(&idx), out: self.p(&out), n: rows.len() as i32, cols: x.cols as i32 };
        self.k.launch("gather_rows", (rows.len() as u32, 1, 1), 256, &p)?;
        Ok(CudaAct { rows: rows.len(), cols: x.cols, data: ActData::F32(out) })
    }

    fn lm_head_pick(&mut self, x: &CudaAct) -> Result<Vec<Pick>> {
        let logits = self.logits(x)?;
        let tok = self.k.alloc::<u32>(x.rows, "picked tokens")?;
        let prob = self.alloc_f32(x.rows, "pick probabilities")?;
        let p = PickParams {
            logits: self.p(&logits),
            token: self.p(&tok),
            prob: self.p(&prob),
            rows: x.rows as i32,
            vocab: self.cfg.vocab_size as i32,
        };
        self.k.launch("row_argmax", (x.rows as u32, 1, 1), 512, &p)?;
        let t = self.download(&tok, "picked tokens")?;
        let pr = self.download(&prob, "pick probabilities")?;
        Ok(t.into_iter().zip(pr).map(|(token, prob)| Pick { token, prob }).collect())
    }

    fn lm_head_logits(&mut self, x: &CudaAct) -> Result<Vec<f32>> {
        let logits = self.logits(x)?;
        self.download(&logits, "logits")
    }

    fn count_experts(&mut self, on: bool) {
        *self.touched.get_mut() = on.then(Vec::new);
    }

    fn experts_touched(&self) -> Vec<usize> {
        self.touched.borrow().clone().unwrap_or_default()
    }

    fn matmul_ceiling(&mut self) -> Result<Option<f64>> {
        Ok(Some(self.measure_gemm_tflops()? * 1e12))
    }

    /// A 1 GiB device-to-device copy, best of 10, bytes read plus written.
    fn measure_copy_bandwidth(&mut self) -> Result<f64> {
        let n = 1usize << 29; // u16 elements: 1 GiB
        let src = self.k.alloc::<u16>(n, "bandwidth probe source")?;
        let mut dst = self.k.alloc::<u16>(n, "bandwidth probe destination")?;
        let copy = |dst: &mut CudaSlice<u16>| self.k.stream.memcpy_dtod(&src, dst).map_err(|e| anyhow!("bandwidth probe copy: {e:?}"));
        copy(&mut dst)?;
        self.k.sync("bandwidth probe warm-up")?;
        let mut best = f64::MAX;
        for _ in 0..10 {
            let t = std::time::Instant::now();
            copy(&mut dst)?;
            self.k.sync("bandwidth probe")?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(2.0 * (n * 2) as f64 / best)
    }
}
