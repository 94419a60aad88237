//! The CUDA backend: every op of [`Backend`] runs on the GPU from the kernels in `csrc/`
//! (cuBLAS only for the plain dense GEMMs: QKV, attention out, dense MLP / shared expert,
//! lm_head). Activations: the residual stream and GEMM outputs are f32, GEMM inputs (norm
//! and attention outputs) bf16; weights and the KV cache are bf16; accumulation is fp32.
//!
//! Configuration comes in [`CudaOptions`]. One debugging switch is an environment variable:
//! `DLLM_CUDA_SYNC=1` synchronises after every launch, so an asynchronous fault is reported
//! against the kernel that caused it (see kernels.rs).

mod act;
mod attention;
mod dense;
mod device;
pub mod error;
mod fp8;
mod graph;
pub mod kernels;
pub mod kv_cache;
mod measure;
mod moe;
pub mod nccl;
mod pick;
mod qkv_rope;
mod row_top;
mod sampler;
pub mod weights;

use super::mem_group::MemGroup;
use super::ranks::Ranks;
use super::shard::Shard;
use super::{ffn_to_add, linear_to_add, qkv_then_rope_store, Backend, Head, LayerRouting, Linear, Norm, StepBatch};
use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::decode::row_top::{merge_tops, RowTop};
use crate::decode::sample::{combine_pick_shares, RowDraw};
use crate::decode::Pick;
use anyhow::{bail, Context, Result};
use cudarc::driver::{CudaContext, CudaSlice};
use error::CudaError;
use kernels::{params::*, Kernel, Kernels, ROW_COPY_THREADS};
use kv_cache::PagePool;
use std::sync::Arc;
use weights::{Ffn, Weights};

pub use act::{ActData, CudaAct};
use attention::StepLayout;
use dense::MlpOut;
use device::open_device;
pub use device::{device_available, device_count};
use graph::HeadOut;
use sampler::LogitRows;

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
    /// Time every launch with a CUDA event pair ([`CudaBackend::profile`] reads them back).
    pub profile_kernels: bool,
    /// Tensor parallel: check at every MoE layer that all ranks routed alike (their routers
    /// run replicated on identical inputs); a sync and a host gather a layer, so tests only.
    pub check_tp_routing: bool,
    /// `--quantization fp8`: routed experts as block FP8, quantized on the device at load
    /// (a checkpoint that stores FP8 experts loads as FP8 without it).
    pub quantization: Option<crate::fp8::Quantization>,
    /// Rows a work item of the expert GEMMs takes: 16 (the weight stream, csrc/moe_stream.cu),
    /// 64 or 128 (shared-memory tiles, csrc/moe_gemm.cu; 128 for bf16 experts on Hopper, else
    /// 64); `None` picks by the rows an expert averages in the step and the GPU. `dllm bench
    /// --moe-item-rows` measures the choice.
    pub moe_item_rows: Option<usize>,
    /// Steps of up to this many requests run as CUDA graphs (graph.rs), one recorded per step
    /// shape; 0 runs every forward eagerly (SGLang's `--cuda-graph-max-bs`, `--disable-cuda-graph`).
    pub cuda_graph_max_bs: usize,
    /// Projections of at most DENSE_STREAM_ROWS rows through the weight stream
    /// (csrc/dense_stream.cu) instead of cuBLAS. Off by default: both its forms measured slower
    /// than cuBLAS on the H200 (docs/PERF.md: "The dense projections as a weight stream", and
    /// session 29); `dllm bench --dense-stream` and the CUDA tests run it.
    pub dense_stream: bool,
    /// The most work items the shared expert may take inside the routed experts' launches
    /// (beyond it, its own cuBLAS GEMMs); `None`: SHARED_STREAM_MAX_ITEMS. `dllm bench
    /// --shared-expert-items` measures the choice.
    pub shared_expert_items: Option<usize>,
    /// CTAs of block_attention an SM that the key-split rule counts as one wave's slots;
    /// `None`: ATT_CTAS_PER_SM. `dllm bench --att-ctas-per-sm` measures the choice.
    pub att_ctas_per_sm: Option<usize>,
    /// block_attention_deep (one warp-specialized CTA an SM) where every CTA has an SM to itself;
    /// `Some` forces it on or off wherever the wgmma path runs (head dim 128 on sm_90a). `dllm bench --att-deep`
    /// measures the choice.
    pub att_deep: Option<bool>,
    /// block_attention_deep's K/V by TMA from a tensor map of the pool (page sizes that are a
    /// power of two of at least ATT_TMA_MIN_BOX_ROWS); `Some(false)`: by cp.async, as the other
    /// attention kernels copy. `dllm bench --att-tma` measures the choice.
    pub att_tma: Option<bool>,
    /// The gate_up weight streams (csrc/moe_stream.cu) hint each warp's weight lines into L2 this
    /// many of its chunks ahead (`None`: by k, CudaBackend::gate_up_prefetch; 0: none). `dllm
    /// bench --stream-prefetch` measures it.
    pub stream_prefetch: Option<usize>,
    /// The bf16 expert tiles on Hopper (64 and 128 rows) as persistent warp-specialized CTAs
    /// with TMA weight loads (csrc/moe_gemm.cu, moe_gemm_ws) rather than the one-warpgroup
    /// tiles; `None`: both item sizes (at realistic routing faster at 64 rows too, where drawn
    /// routing had them 2% slower: csrc/params.h). `dllm bench --moe-ws-tiles` measures it.
    pub moe_ws_tiles: Option<bool>,
    /// bf16 gate_up over 128-row items on the warp-specialized tiles as 192-row units (an
    /// expert's last two items, 128 rows and at most 64, one unit: csrc/moe_gemm.cu,
    /// ws_unit_rows); `None`: from M192_MIN_ROWS rows an expert on average (moe.rs). `dllm bench
    /// --moe-gate-up-m192` measures it.
    pub moe_gate_up_m192: Option<bool>,
    /// fp8 experts' 16-row items as tiles (csrc/moe_stream.cu, moe_*_fp8_m16: weights and x
    /// staged in shared memory for the CTA's 128 weight rows) instead of the weight stream;
    /// `None`: the tiles. `dllm bench --fp8-m16-tiles` measures it.
    pub fp8_m16_tiles: Option<bool>,
    /// fp8 experts' 64-row items on Hopper through the tiles that widen the codes in registers
    /// as wgmma's A operand, a whole scale block a stage (csrc/moe_gemm.cu,
    /// moe_gemm_wgmma_fp8_ra), instead of the tiles that widen them into shared memory a
    /// 64-column stage at a time. `dllm bench --fp8-codes-in-registers false` measures without.
    pub fp8_codes_in_registers: bool,
    /// fp8 experts on Hopper as W8A8 where the experts average 8 rows or more (4 where they are
    /// 4096 or more wide; moe.rs, w8a8_m64_min_rows): 64-row items whose activations are
    /// quantized to e4m3 with one scale a row and 128 columns (csrc/quantize_fp8.cu,
    /// quantize_rows_fp8; src/fp8.rs, quantize_rows) and multiplied by the codes on fp8 wgmma
    /// (csrc/moe_gemm.cu, moe_gemm_wgmma_w8a8); fewer rows stay W8A16 (16-row items). Off: W8A16
    /// at every batch (the codes widened to bf16). The CPU twin: `CpuBackend::set_fp8_activations`.
    /// On by default: steps 12-21% faster at mini's shape from batch 8, 11-29% at flash's from
    /// batch 4 (docs/PERF.md, session 40). `--fp8-activations false` turns it off.
    pub fp8_activations: bool,
    /// The router as one launch (csrc/moe_route.cu: logits, selection and, at one
    /// cluster's rows, the permute) instead of cuBLAS's logits, moe_router_select and
    /// moe_permute; `None`: at up to 256 rows (batch 8; moe.rs, FUSED_ROUTE_MAX_ROWS). `dllm
    /// bench --fused-router` measures it.
    pub fused_router: Option<bool>,
    /// moe_route's one cluster of rows (a step up to batch 1's block) over a non-portable
    /// cluster of 16 CTAs (moe_route_wide: half the router's weights an SM) where the GPU places
    /// one, instead of 8. `dllm bench --wide-route false` measures without.
    pub wide_route: bool,
    /// With fp8 experts' 16-row tiles, the shared expert's items (bf16: a CTA reads twice an fp8
    /// CTA's bytes) taken by the launches' first CTAs instead of their last, so that they are
    /// not the launch's tail (MoeGemmParams::shared_items_first). `dllm bench
    /// --shared-items-first false` measures without.
    pub shared_items_first: bool,
    /// With fp8 experts' 16-row tiles and the one-warpgroup bf16 wgmma tiles, each down CTA
    /// waits for its own item's gate_up CTAs (counted in the item's counter,
    /// MoeGemmParams::item_done) instead of for gate_up's end, so down's items start under
    /// gate_up's tail. `dllm bench --item-wait false` measures without.
    pub item_wait: bool,
    /// A MoE layer's slots summed by the next layer's input norm (add_moe_rms_norm) instead of
    /// by moe_combine into an f32 output first. `dllm bench --fused-moe-norm false` measures it.
    pub fused_moe_norm: bool,
    /// qk_norm_rope_store in its vector form (head dims 128 and 256: a head's row a warp's
    /// vector, several heads' loads in flight) where it applies. `dllm bench --rope-vectors
    /// false` measures the scalar form.
    pub rope_vectors: bool,
    /// The down weight streams and one-warpgroup bf16 tiles (the experts of steps up to batch
    /// 32 at mini's shape) launched as programmatic dependents of their gate_up, their first
    /// weights requested before gate_up ends. `dllm bench --expert-pdl false` measures without.
    pub expert_pdl: bool,
    /// The attention's output projection and the dense MLP's down projection added into the
    /// residual stream by their cuBLAS GEMMs (beta = 1; one rank, no weight stream) instead of
    /// written out for the next norm to add: that norm then reads one f32 row instead of two and
    /// writes none. `dllm bench --residual-gemm false` measures without.
    pub residual_gemm: bool,
    /// A greedy step's lm_head on Hopper as lm_head_pick (csrc/lm_head.cu: the GEMM with each
    /// row's argmax and softmax sum in its epilogue, never writing the logits) instead of cuBLAS
    /// then row_argmax. `dllm bench --fused-pick false` measures without.
    pub fused_pick: bool,
    /// The QKV projection on Hopper as qkv_rope_store (csrc/qkv_rope.cu: the GEMM with the QK
    /// norm, RoPE and K/V stores in its epilogue, never writing the QKV rows) from
    /// `fused_qkv_rope_min_rows` rows on, instead of cuBLAS then qk_norm_rope_store. On by
    /// default since its 16-byte epilogue stores (session 62, H100: steps at batch 128 1.7-2.0%
    /// faster, batch 64 level); `dllm bench --fused-qkv-rope false` measures without.
    pub fused_qkv_rope: bool,
    /// The fewest rows (a step's batch x block) that take qkv_rope_store: below them its 128-row
    /// units leave SMs idle where cuBLAS splits the work finer (2,048, batch 64 at block 32: the
    /// fewest measured level or faster, session 62).
    pub fused_qkv_rope_min_rows: usize,
    /// The QKV projection written by cuBLAS in bf16 (its fp32 sums rounded once, as a bf16
    /// checkpoint's own QKV rows are) for qk_norm_rope_store's _bf16 kernels, instead of in f32:
    /// half the bytes out of the GEMM and into the norm. `dllm bench --qkv-bf16 false` measures
    /// without.
    pub qkv_bf16: bool,
    /// A sampled step's lm_head writes its logits in bf16 (the fp32 sums rounded once, as a bf16
    /// model's logits are in PyTorch) for sample_rows_bf16, instead of in f32: half the bytes out
    /// of the GEMM and into the sampler's passes. Its greedy rows, if any, take the argmax of
    /// those rows; greedy steps keep f32 logits and the fused pick. `dllm bench --sample-bf16
    /// false` measures without.
    pub sample_bf16: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            mem_fraction_static: 0.85,
            page_size: 32,
            max_kv_bytes: None,
            device: 0,
            poison: false,
            profile_kernels: false,
            check_tp_routing: false,
            quantization: None,
            moe_item_rows: None,
            cuda_graph_max_bs: crate::backend::DEFAULT_CUDA_GRAPH_MAX_BS,
            dense_stream: false,
            shared_expert_items: None,
            att_ctas_per_sm: None,
            att_deep: None,
            att_tma: None,
            stream_prefetch: None,
            moe_ws_tiles: None,
            moe_gate_up_m192: None,
            fp8_m16_tiles: None,
            fp8_codes_in_registers: true,
            fp8_activations: true,
            fused_router: None,
            wide_route: true,
            shared_items_first: true,
            item_wait: true,
            fused_moe_norm: true,
            rope_vectors: true,
            expert_pdl: true,
            residual_gemm: true,
            fused_pick: true,
            fused_qkv_rope: true,
            fused_qkv_rope_min_rows: 2048,
            qkv_bf16: true,
            sample_bf16: true,
        }
    }
}

/// A rank's place in a tensor-parallel group: its shard, its NCCL communicator (the
/// all-reduce) and the host meeting point of the vocab-parallel pick. Alone: [`TpRank::whole`].
pub struct TpRank {
    pub shard: Shard,
    pub comm: Option<nccl::Comm>,
    pub group: Option<Arc<MemGroup>>,
}

impl TpRank {
    pub fn whole() -> Self {
        TpRank { shard: Shard::WHOLE, comm: None, group: None }
    }
}

/// Where a tensor-parallel group's weights come from.
pub enum WeightsFrom {
    Checkpoint(Arc<Checkpoint>),
    /// A preset's shapes drawn on the devices from a seed (the same values at every rank count).
    Random {
        cfg: Box<ModelConfig>,
        seed: u64,
    },
}

/// `size` ranks on GPUs `opts.device ..`, one thread each, every rank loading only its shard.
pub fn tensor_parallel(from: WeightsFrom, size: usize, opts: &CudaOptions) -> Result<Ranks<CudaBackend>> {
    let cfg = match &from {
        WeightsFrom::Checkpoint(ck) => ck.config.clone(),
        WeightsFrom::Random { cfg, .. } => (**cfg).clone(),
    };
    Shard::check(&cfg, size)?;
    let gpus = device_count();
    if opts.device + size > gpus {
        bail!("--tp-size {size} needs {size} GPUs (from device {}), but this machine shows {gpus}", opts.device);
    }
    let ordinals: Vec<usize> = (opts.device..opts.device + size).collect();
    let comms = nccl::Comm::init_all(&ordinals).context("setting up NCCL between the tensor-parallel GPUs")?;
    let nccl_abort = comms[0].group_abort();
    let comms = std::sync::Mutex::new(comms.into_iter().map(Some).collect::<Vec<_>>());
    let (group, opts) = (MemGroup::new(size), opts.clone());
    let abort = {
        let group = group.clone();
        move || {
            group.abort();
            nccl_abort.abort();
        }
    };
    let ranks = Ranks::spawn(size, move |rank| {
        let comm = comms.lock().unwrap_or_else(|e| e.into_inner())[rank].take();
        let tp = TpRank { shard: Shard { rank, size }, comm, group: Some(group.clone()) };
        let o = CudaOptions { device: opts.device + rank, ..opts.clone() };
        match &from {
            WeightsFrom::Checkpoint(ck) => CudaBackend::load_rank(ck, &o, tp),
            WeightsFrom::Random { cfg, seed } => CudaBackend::random_rank((**cfg).clone(), *seed, &o, tp),
        }
    })?;
    Ok(ranks.with_abort(abort))
}

pub struct CudaBackend {
    /// This rank's view: its heads and intermediate widths (the whole model at one rank); the
    /// vocabulary stays whole (lm_head scores this rank's `tp.shard.vocab` slice of it).
    pub cfg: ModelConfig,
    tp: TpRank,
    pub opts: CudaOptions,
    ctx: Arc<CudaContext>,
    k: Kernels,
    w: Weights,
    kv: CudaSlice<u16>,
    /// The rope's (cos, sin) table (attention::rope_table).
    rope_table: CudaSlice<f32>,
    pool: PagePool,
    /// The inputs of the forward being issued (eager, or being recorded).
    step: Option<StepLayout>,
    /// The lm_head's results of the last eager forward (or of the one being recorded).
    out: Option<HeadOut>,
    /// The step shapes recorded as CUDA graphs, and which one the last step replayed.
    graphs: graph::StepGraphs,
    /// The next `Head::Sample`'s knobs and uniforms, one per output row.
    draws: Vec<RowSampling>,
    device_name: String,
    sm_count: usize,
    /// Hopper (sm_90): the bf16 expert tiles run on wgmma (csrc/moe_gemm.cu), which beat the
    /// weight stream at every batch measured, so they take every bf16 step.
    wgmma: bool,
    /// Per layer, the experts' TMA tensor maps (moe.rs, expert_tensor_maps).
    expert_maps: Vec<Option<moe::ExpertMaps>>,
    /// The KV pool's TMA tensor map that block_attention_deep reads (attention.rs,
    /// kv_tensor_map), and its box's positions; `None` where the deep kernel copies by cp.async.
    kv_map: Option<(CudaSlice<u8>, usize)>,
    /// The lm_head's TMA tensor map that lm_head_pick reads (dense.rs, dense_tiles_map); `None` where
    /// greedy steps take cuBLAS and row_argmax.
    lm_head_map: Option<CudaSlice<u8>>,
    /// What qkv_rope_store reads (qkv_rope.rs); `None` where the QKV projection takes cuBLAS and
    /// qk_norm_rope_store.
    qkv_rope: Option<qkv_rope::QkvRopeMaps>,
    /// Distinct experts per MoE layer of the current forward, when counting (benchmarks).
    touched: std::cell::RefCell<Option<Vec<usize>>>,
    /// Seconds the host has waited in blocking downloads since Measure::take_device_wait last
    /// read it (device.rs, `waiting`).
    device_wait: std::cell::Cell<f64>,
    /// CUDA events around each step's forward on the stream, while benchmarks time them
    /// (Measure::time_step_spans; measure.rs).
    step_events: Option<measure::StepEvents>,
    /// The MoE layers' routing decisions of the current forward, when recording (tests).
    routing: std::cell::RefCell<Option<Vec<LayerRouting>>>,
    /// A MoE layer's buffers, allocated before its post-attention norm (moe.rs, `MoeBuffers`):
    /// taken by the layer.
    moe_prepared: std::cell::RefCell<Option<moe::MoeBuffers>>,
    /// A layer's attention outputs, allocated before its qk_norm_rope_store (attention.rs,
    /// `AttnBuffers`): taken by its attention.
    attn_prepared: Option<attention::AttnBuffers>,
}

impl CudaBackend {
    pub fn load(ck: &Checkpoint, opts: &CudaOptions) -> Result<Self> {
        Self::load_rank(ck, opts, TpRank::whole())
    }

    /// bf16 random weights made on the device (shapes like the `mini` preset that cannot be shipped);
    /// with `--quantization fp8` the experts' draws are quantized on the device.
    pub fn random(cfg: ModelConfig, seed: u64, opts: &CudaOptions) -> Result<Self> {
        Self::random_rank(cfg, seed, opts, TpRank::whole())
    }

    /// One tensor-parallel rank of a checkpoint: its slices only.
    pub fn load_rank(ck: &Checkpoint, opts: &CudaOptions, tp: TpRank) -> Result<Self> {
        let shard = tp.shard;
        let cfg = ck.config.clone().quantized(opts.quantization);
        Self::build(cfg, opts, tp, |k, c| weights::load(k, c, shard, &mut weights::FromCheckpoint::new(ck, shard)))
    }

    /// One tensor-parallel rank of random weights: the values the whole model has at its slices.
    pub fn random_rank(cfg: ModelConfig, seed: u64, opts: &CudaOptions, tp: TpRank) -> Result<Self> {
        let shard = tp.shard;
        Self::build(cfg.quantized(opts.quantization), opts, tp, |k, c| weights::load(k, c, shard, &mut weights::Random::new(c, seed)))
    }

    /// `whole` is the whole model's config; the backend computes with its rank's view of it.
    fn build(
        whole: ModelConfig,
        opts: &CudaOptions,
        tp: TpRank,
        make: impl FnOnce(&Kernels, &ModelConfig) -> Result<Weights>,
    ) -> Result<Self> {
        Shard::check(&whole, tp.shard.size)?;
        let cfg = tp.shard.local_config(&whole);
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
        let major = ctx.attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).unwrap_or(0);
        let minor = ctx.attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).unwrap_or(0);
        let k = Kernels::new(&ctx, opts.profile_kernels)?;
        let w = make(&k, &whole).context("putting the weights on the GPU")?;
        k.sync("weight upload")?;
        let rope_table = k.upload(&attention::rope_table(&cfg), "the rope table")?;
        let (free, _total) = ctx.mem_get_info().map_err(CudaError::driver(|| "cuMemGetInfo".into()))?;
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
        let mut b = CudaBackend {
            pool: PagePool::new(num_pages, opts.page_size),
            tp,
            cfg,
            opts: opts.clone(),
            ctx,
            k,
            w,
            kv,
            rope_table,
            step: None,
            out: None,
            graphs: graph::StepGraphs::new(opts.cuda_graph_max_bs),
            draws: Vec::new(),
            device_name,
            sm_count,
            wgmma: (major, minor) == (9, 0),
            expert_maps: Vec::new(),
            kv_map: None,
            lm_head_map: None,
            qkv_rope: None,
            touched: Default::default(),
            device_wait: Default::default(),
            step_events: None,
            routing: Default::default(),
            moe_prepared: Default::default(),
            attn_prepared: None,
        };
        b.expert_maps = b.expert_tensor_maps()?;
        b.kv_map = b.kv_tensor_map()?;
        if b.opts.fused_pick {
            let w = b.p(b.w.lm_head_rows());
            b.lm_head_map = b.dense_tiles_map(w, b.vocab_slice().len(), b.cfg.hidden_size, "the lm_head's tensor map")?;
        }
        b.qkv_rope = b.qkv_rope_maps()?;
        if b.opts.poison {
            // Positions no token has written read as NaN: a kernel that lets them into P V unzeroed fails the tests.
            b.nan_fill(0, b.p(&b.kv), b.kv.len())?;
        }
        Ok(b)
    }

    pub fn kv_pages(&self) -> (usize, usize) {
        (self.pool.free_pages(), self.pool.num_pages)
    }

    /// Whether greedy rows take lm_head_pick (CudaOptions::fused_pick on a GPU with wgmma).
    pub fn fuses_pick(&self) -> bool {
        self.lm_head_map.is_some()
    }

    /// Per-kernel wall time (with `profile_kernels`): (name, total ms, calls).
    pub fn profile(&self) -> Vec<(String, f64, u64)> {
        self.k.profile()
    }

    pub fn profile_reset(&self) {
        self.k.profile_reset()
    }

    pub fn synchronize(&self) -> Result<()> {
        Ok(self.k.sync("synchronize")?)
    }

    /// A projection's weight, its output columns and its name in profiles.
    fn linear_weight(&self, w: Linear) -> (&CudaSlice<u16>, usize, &'static str) {
        match w {
            Linear::Qkv(l) => (&self.w.layers[l].qkv, self.cfg.qkv_rows(), "qkv"),
            Linear::AttnOut(l) => (&self.w.layers[l].dense, self.cfg.hidden_size, "attention out"),
        }
    }

    /// This rank's slice of the vocabulary (the whole of it at one rank).
    fn vocab_slice(&self) -> std::ops::Range<usize> {
        self.tp.shard.vocab(self.cfg.vocab_size)
    }

    /// Seconds per all-reduce of `floats` f32 across the ranks, as a step issues them: 64 queued
    /// back to back, one sync, best of 5 after a warm-up (every rank must call it at once).
    pub fn time_all_reduce_s(&self, floats: usize) -> Result<Option<f64>> {
        let Some(comm) = &self.tp.comm else { return Ok(None) };
        const QUEUED: usize = 64;
        let buf = self.alloc_f32(floats, "all-reduce probe")?;
        let run = || -> Result<()> {
            for _ in 0..QUEUED {
                comm.all_reduce_sum_f32(self.p(&buf), floats, &self.k.stream)?;
            }
            Ok(self.k.sync("all-reduce probe")?)
        };
        run()?;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            run()?;
            best = best.min(t.elapsed().as_secs_f64() / QUEUED as f64);
        }
        Ok(Some(best))
    }

    /// LowConfidence on the device for each request's block: `probs`/`masked` are
    /// `[requests * block]`; returns the chosen positions per request, ascending.
    pub fn unmask(&self, probs: &[f32], masked: &[bool], quotas: &[usize], block: usize, threshold: f32) -> Result<Vec<Vec<usize>>> {
        let n = quotas.len();
        if block == 0 || block > UNMASK_MAX_BLOCK || probs.len() != n * block || masked.len() != n * block {
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
        self.k.launch(Kernel::UnmaskLowConfidence, (n as u32, 1, 1), (block.div_ceil(32) * 32) as u32, &p)?;
        let v = self.download(&out, "unmask output")?;
        Ok((0..n).map(|r| (0..block).filter(|&i| v[r * block + i] != 0).collect()).collect())
    }
}

/// The norms' threads a row of `cols` (csrc/norm.cu): NORM_CACHE columns a thread in whole warps,
/// so that a row of up to NORM_CACHE x NORM_MAX_THREADS columns stays in registers between the
/// kernel's two passes, in [NORM_MIN_THREADS, NORM_MAX_THREADS]. (Mini's 2,048: 256; flash's
/// 4,096: 512.)
fn norm_threads(cols: usize) -> u32 {
    (cols.div_ceil(NORM_CACHE).next_multiple_of(WARP)).clamp(NORM_MIN_THREADS, NORM_MAX_THREADS) as u32
}

fn check_shapes(c: &ModelConfig) -> Result<()> {
    let d = c.head_dim();
    let group = c.num_attention_heads / c.num_key_value_heads;
    if d > ROPE_MAX_D || !d.is_multiple_of(16) {
        bail!("the CUDA kernels need head_dim <= {ROPE_MAX_D} and a multiple of 16 (tensor-core tiles), got {d}");
    }
    if group > 8 {
        bail!("the CUDA attention kernel supports up to 8 query heads per KV head, got {group}");
    }
    if !c.hidden_size.is_multiple_of(8) || !c.moe_intermediate_size.is_multiple_of(8) || c.hidden_size > 8192 {
        bail!("the CUDA kernels need hidden_size (<= 8192) and moe_intermediate_size to be multiples of 8");
    }
    // The fp8 GEMM copies weight rows 16 codes (bytes) at a time.
    if c.fp8_experts() && (!c.hidden_size.is_multiple_of(16) || !c.moe_intermediate_size.is_multiple_of(16)) {
        bail!("the CUDA fp8 expert GEMMs need hidden_size and moe_intermediate_size to be multiples of 16");
    }
    // The shared expert can join the routed ones as expert number num_experts; a warp picks a
    // token's top-k, one pick a lane, the shared expert's too.
    let max_experts = ROUTER_MAX_E.min(PERMUTE_MAX_E) - 1;
    if c.num_experts > max_experts || c.n_group > ROUTER_MAX_GROUPS || c.num_experts_per_tok >= WARP {
        bail!(
            "the CUDA router supports up to {max_experts} experts in up to {ROUTER_MAX_GROUPS} groups, and fewer than {WARP} of them a token"
        );
    }
    Ok(())
}

impl Drop for CudaBackend {
    /// The CUDA graphs go before the communicator: a graph that captured NCCL collectives holds
    /// resources of it.
    fn drop(&mut self) {
        let _ = self.k.sync("dropping the backend");
        self.graphs = graph::StepGraphs::new(0);
    }
}

impl Backend for CudaBackend {
    type Act = CudaAct;

    fn name(&self) -> String {
        format!("cuda ({}, device {})", self.device_name, self.ctx.ordinal())
    }

    fn max_seq_len(&self) -> usize {
        self.pool.num_pages * self.pool.page_size
    }

    fn alloc_seq(&mut self, max_len: usize) -> Result<usize> {
        self.pool.alloc_seq(max_len)
    }

    fn free_seq(&mut self, slot: usize) {
        self.pool.free_seq(slot);
        self.step = None;
    }

    fn embed(&mut self, tokens: &[u32]) -> Result<CudaAct> {
        // A forward starts here.
        if let Some(t) = self.touched.get_mut().as_mut() {
            t.clear();
        }
        if let Some(r) = self.routing.get_mut().as_mut() {
            r.clear();
        }
        let (h, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= v) {
            bail!("token id {t} is outside the vocabulary ({v})");
        }
        // The staged forward's ids (a CUDA graph cannot upload), else this call's own.
        let own;
        let ids = match self.step.as_ref().filter(|s| s.tokens == tokens) {
            Some(s) => s.at(self.p(&s.pack), s.shape.offsets().ids),
            None => {
                own = self.upload(tokens, "token ids")?;
                self.p(&own)
            }
        };
        self.k.hold_stream()?; // profiling: queue the forward before it runs
        let out = self.alloc_f32(tokens.len() * h, "embeddings")?;
        let p = EmbedParams {
            table: self.p(&self.w.embed),
            tokens: ids,
            out: self.p(&out),
            rows: tokens.len() as i32,
            cols: h as i32,
            vocab: v as i32,
        };
        self.k.launch(Kernel::EmbedGather, (tokens.len() as u32, 1, 1), ROW_COPY_THREADS, &p)?;
        Ok(CudaAct { rows: tokens.len(), cols: h, data: ActData::F32(out) })
    }

    fn add_rms_norm(&mut self, x: &mut CudaAct, delta: Option<&CudaAct>, w: Norm) -> Result<CudaAct> {
        let xs = self.f32_of(x, "add_rms_norm")?;
        if let Some(d) = delta.filter(|d| d.rows != x.rows || d.cols != x.cols) {
            bail!("add_rms_norm: delta is {}x{}, x is {}x{}", d.rows, d.cols, x.rows, x.cols);
        }
        // A MoE layer's slots are summed on the way (add_moe_rms_norm); delta is then the
        // shared expert's output, where it ran beside them.
        let (kernel, dp, slots) = match delta {
            Some(CudaAct { data: ActData::MoeSlots(m), .. }) => {
                (Kernel::AddMoeRmsNorm, m.shared.as_ref().map_or(0, |s| self.p(s)), Some(m))
            }
            Some(d) => (Kernel::AddRmsNorm, self.p(self.f32_of(d, "add_rms_norm delta")?), None),
            None => (Kernel::AddRmsNorm, 0, None),
        };
        let wv = match w {
            Norm::Input(l) => &self.w.layers[l].input_norm,
            Norm::PostAttention(l) => &self.w.layers[l].post_norm,
            Norm::Final => &self.w.final_norm,
        };
        let out = self.alloc_bf16(x.rows * x.cols, "normed activations")?;
        // Before a MoE layer: its buffers, allocated before this norm, which zeroes its router's
        // pick counts (moe.rs, MoeBuffers).
        let mut moe = match w {
            Norm::PostAttention(l) => self.moe_buffers(l, x.rows)?,
            _ => None,
        };
        let zero = moe.as_mut().and_then(|b| b.counts_to_zero());
        let (zero, zero_len) = zero.map_or((0, 0), |z| (self.p(z), z.len() as i32));
        let p = NormParams {
            x: self.p(xs),
            delta: dp,
            w: self.p(wv),
            out: self.p(&out),
            rows: x.rows as i32,
            cols: x.cols as i32,
            eps: self.cfg.rms_norm_eps,
            topk: slots.map_or(0, |m| m.topk as i32),
            slot_out: slots.map_or(0, |m| self.p(&m.slot_out)),
            tok_slot: slots.map_or(0, |m| self.p(&m.tok_slot)),
            zero,
            zero_len,
        };
        self.k.launch(kernel, (x.rows as u32, 1, 1), norm_threads(x.cols), &p)?;
        *self.moe_prepared.borrow_mut() = moe;
        Ok(CudaAct { rows: x.rows, cols: x.cols, data: ActData::Bf16(out) })
    }

    fn linear(&mut self, x: &CudaAct, w: Linear) -> Result<CudaAct> {
        let xb = self.bf16_of(x, "linear")?;
        let (wt, n, what) = self.linear_weight(w);
        // QKV in bf16 for the norm after it (CudaOptions::qkv_bf16), where cuBLAS computes it.
        if matches!(w, Linear::Qkv(_)) && self.opts.qkv_bf16 && !self.streams(x.rows, x.cols, false) {
            let y = self.alloc_bf16(x.rows * n, what)?;
            self.k.gemm_bf16_bf16(what, self.p(xb), self.p(wt), self.p(&y), x.rows, n, x.cols)?;
            return Ok(CudaAct { rows: x.rows, cols: n, data: ActData::Bf16(y) });
        }
        let y = self.gemm(what, xb, wt, x.rows, n, x.cols)?;
        Ok(CudaAct { rows: x.rows, cols: n, data: ActData::F32(y) })
    }

    fn linear_residual(&mut self, x: &mut CudaAct, o: &CudaAct, w: Linear) -> Result<Option<CudaAct>> {
        let (wt, n, what) = self.linear_weight(w);
        // Only cuBLAS adds into its output, and only one rank's output is the whole sum.
        if !self.opts.residual_gemm || self.tp.comm.is_some() || self.streams(o.rows, o.cols, false) {
            return linear_to_add(self, o, w);
        }
        if x.rows != o.rows || x.cols != n {
            bail!("linear_residual: the residual is {}x{}, the projection {}x{n}", x.rows, x.cols, o.rows);
        }
        let (ob, xs) = (self.bf16_of(o, "linear_residual")?, self.f32_of(x, "linear_residual")?);
        // x = x + o w^T: beta = 1 reads x as the GEMM's C, one f32 rounding of the sum as the norm's add.
        self.k.gemm_bf16_f32(what, self.p(ob), self.p(wt), self.p(xs), o.rows, n, o.cols, 1.0)?;
        Ok(None)
    }

    fn qk_norm_rope_store(&mut self, qkv: &CudaAct, layer: usize, batch: &StepBatch) -> Result<CudaAct> {
        self.rope_store(qkv, layer, batch)
    }

    fn qkv_rope_store(&mut self, h: &CudaAct, layer: usize, batch: &StepBatch) -> Result<CudaAct> {
        match self.fused_qkv_rope(h, layer, batch)? {
            Some(q) => Ok(q),
            None => qkv_then_rope_store(self, h, layer, batch),
        }
    }

    fn attention(&mut self, q: &CudaAct, layer: usize, batch: &StepBatch) -> Result<CudaAct> {
        self.attend(q, layer, batch)
    }

    fn ffn(&mut self, x: &CudaAct, layer: usize, batch: &StepBatch) -> Result<CudaAct> {
        let xb = self.bf16_of(x, "ffn")?;
        let y = match &self.w.layers[layer].ffn {
            Ffn::Dense(m) => self.dense_mlp(m, xb, x.rows)?,
            Ffn::Moe(m) => {
                let slots = self.moe(m, layer, xb, x.rows, batch)?;
                // Left in its slots for the next input norm to sum (CudaOptions::fused_moe_norm).
                if self.opts.fused_moe_norm {
                    return Ok(CudaAct { rows: x.rows, cols: self.cfg.hidden_size, data: ActData::MoeSlots(slots) });
                }
                self.combined(&slots, x.rows)?
            }
        };
        Ok(CudaAct { rows: x.rows, cols: self.cfg.hidden_size, data: ActData::F32(y) })
    }

    fn ffn_residual(&mut self, x: &mut CudaAct, h: &CudaAct, layer: usize, batch: &StepBatch) -> Result<Option<CudaAct>> {
        // A dense MLP's down projection adds into x (CudaOptions::residual_gemm) where cuBLAS
        // computes it at one rank (only one rank's output is the whole sum). A MoE layer's shared
        // expert does not: its output's one read would only move from add_moe_rms_norm onto the
        // side stream, beside the routed experts, which measured slower (docs/PERF.md, session 35).
        let into_x = self.opts.residual_gemm && self.tp.comm.is_none();
        let Ffn::Dense(m) = &self.w.layers[layer].ffn else { return ffn_to_add(self, h, layer, batch) };
        if !into_x {
            return ffn_to_add(self, h, layer, batch);
        }
        if x.rows != h.rows || x.cols != self.cfg.hidden_size {
            bail!("ffn_residual: the residual is {}x{}, the rows {}x{}", x.rows, x.cols, h.rows, self.cfg.hidden_size);
        }
        let b = self.mlp_buffers(m, h.rows)?;
        // The weight stream, where it takes the down projection, cannot add: its rows are the
        // next norm's to add.
        if self.mlp_down_streams(m, h.rows) {
            let y = self.alloc_f32(h.rows * self.cfg.hidden_size, "mlp down")?;
            self.dense_mlp_into(m, self.bf16_of(h, "ffn")?, h.rows, &b, MlpOut::Own(&y))?;
            return Ok(Some(CudaAct { rows: h.rows, cols: self.cfg.hidden_size, data: ActData::F32(y) }));
        }
        let residual = self.p(self.f32_of(x, "ffn_residual")?);
        self.dense_mlp_into(m, self.bf16_of(h, "ffn")?, h.rows, &b, MlpOut::Residual(residual))?;
        Ok(None)
    }

    fn all_reduce(&mut self, x: &mut CudaAct) -> Result<()> {
        let Some(comm) = &self.tp.comm else { return Ok(()) };
        self.make_f32(x)?; // each rank's partial sums, combined from its slots
        let buf = self.f32_of(x, "all_reduce")?;
        let t0 = self.k.prof_start();
        comm.all_reduce_sum_f32(self.p(buf), x.rows * x.cols, &self.k.stream)?;
        self.k.prof_end("nccl all_reduce", t0);
        Ok(())
    }

    fn gather_rows(&mut self, x: &CudaAct, rows: &[usize]) -> Result<CudaAct> {
        if let Some(&r) = rows.iter().find(|&&r| r >= x.rows) {
            bail!("gather_rows: row {r} is out of range ({} rows)", x.rows);
        }
        // The last MoE layer's output before the final norm: combined here (all its rows).
        let combined = match &x.data {
            ActData::MoeSlots(m) => Some(self.combined(m, x.rows)?),
            _ => None,
        };
        let src = match &combined {
            Some(y) => y,
            None => self.f32_of(x, "gather_rows")?,
        };
        // The staged forward's output rows (a CUDA graph cannot upload), else this call's own.
        let own;
        let idx = match self.step.as_ref().filter(|s| s.out_rows == rows) {
            Some(s) => s.at(self.p(&s.pack), s.shape.offsets().out_rows),
            None => {
                own = self.upload(&rows.iter().map(|&r| r as i32).collect::<Vec<_>>(), "row indices")?;
                self.p(&own)
            }
        };
        let out = self.alloc_f32(rows.len() * x.cols, "gathered rows")?;
        let p = GatherParams { src: self.p(src), rows: idx, out: self.p(&out), n: rows.len() as i32, cols: x.cols as i32 };
        self.k.launch(Kernel::GatherRows, (rows.len() as u32, 1, 1), ROW_COPY_THREADS, &p)?;
        Ok(CudaAct { rows: rows.len(), cols: x.cols, data: ActData::F32(out) })
    }

    fn head(&mut self, x: &CudaAct, head: Head) -> Result<()> {
        if head == Head::Sample && self.tp.group.is_some() {
            bail!("the device sampler needs whole vocabulary rows; tensor-parallel ranks hold slices");
        }
        self.ensure_head_out(head, x.rows)?;
        let out = self.out.as_ref().unwrap();
        let xb = self.bf16_of(x, "lm_head")?;
        let w = self.w.lm_head_rows();
        let (vocab, h) = (self.vocab_slice(), self.cfg.hidden_size);
        if let Some(logits) = &out.logits {
            self.k.gemm_bf16_f32("lm_head", self.p(xb), self.p(w), self.p(logits), x.rows, vocab.len(), h, 0.0)?;
            if let Some(tops) = &out.tops {
                self.launch_row_top_k(logits, x.rows, vocab.len(), vocab.start, tops)?;
            }
            return Ok(());
        }
        // cuBLAS at every row count: over the vocabulary's 157k rows it reads at ~90% (docs/PERF.md).
        // A sampled step's rows in bf16 (CudaOptions::sample_bf16): the sampler reads them
        // about twice, and its first pass from DRAM.
        if let (Some(sampling), true) = (&out.sampling, self.opts.sample_bf16) {
            let logits = self.alloc_bf16(x.rows * vocab.len(), "lm_head")?;
            self.k.gemm_bf16_bf16("lm_head", self.p(xb), self.p(w), self.p(&logits), x.rows, vocab.len(), h)?;
            return self.launch_sample(LogitRows::Bf16(&logits), x.rows, vocab.len(), sampling, &out.token, &out.prob);
        }
        let share = out.share.as_ref().map_or(0, |s| self.p(s));
        let pick = |logits: u64| self.pick_params(logits, (&out.token, &out.prob, share), x.rows, vocab.clone());
        // Greedy rows on Hopper: the GEMM with the pick in its epilogue (CudaOptions::fused_pick).
        if let (None, Some(map)) = (&out.sampling, &self.lm_head_map) {
            return self.launch_fused_pick(xb, map, h, pick(0));
        }
        let logits = self.cublas_gemm("lm_head", xb, w, x.rows, vocab.len(), h)?;
        if let Some(sampling) = &out.sampling {
            return self.launch_sample(LogitRows::F32(&logits), x.rows, vocab.len(), sampling, &out.token, &out.prob);
        }
        self.launch_pick(&pick(self.p(&logits)))
    }

    fn set_draws(&mut self, draws: &[RowDraw]) -> Result<()> {
        self.draws = draws.iter().map(RowSampling::of).collect();
        Ok(())
    }

    fn read_picks(&mut self) -> Result<Vec<Pick>> {
        let out = self.head_out(&[Head::Pick, Head::Sample])?;
        if let (Some(group), Some(share)) = (&self.tp.group, &out.share) {
            // Vocab-parallel: three floats per row cross between the ranks, never the logits.
            let mine = self.download(share, "pick shares")?;
            return Ok(combine_pick_shares(&group.all_gather(self.tp.shard.rank, &mine)?, out.rows));
        }
        self.download_picks(&out.token, &out.prob)
    }

    fn read_logits(&mut self) -> Result<Vec<f32>> {
        let out = self.head_out(&[Head::Logits])?;
        let logits = self.download(out.logits.as_ref().unwrap(), "logits")?;
        match &self.tp.group {
            // Sampling needs whole rows: the ranks' slices meet on the host.
            Some(group) => Ok(self.tp.shard.assemble_vocab(&group.all_gather(self.tp.shard.rank, &logits)?, out.rows, self.cfg.vocab_size)),
            None => Ok(logits),
        }
    }

    fn summarizes_rows(&self) -> bool {
        true
    }

    fn read_tops(&mut self) -> Result<Vec<RowTop>> {
        let out = self.head_out(&[Head::Top])?;
        let Some(tops) = &out.tops else { bail!("read_tops: the last forward's head made no row summaries") };
        let mine = self.download(tops, "logits row summaries")?;
        let Some(group) = &self.tp.group else {
            return Ok(mine.chunks_exact(ROW_TOP_SUMMARY).map(RowTop::from_wire).collect());
        };
        // Vocab-parallel: the ranks' summaries of their slices meet (2K + 2 floats a row, never
        // the rows) and merge into the whole row's.
        let parts = group.all_gather(self.tp.shard.rank, &mine)?;
        let s = ROW_TOP_SUMMARY;
        Ok((0..out.rows)
            .map(|r| {
                merge_tops(&parts.iter().map(|p| RowTop::from_wire(p.get(r * s..(r + 1) * s).unwrap_or_default())).collect::<Vec<_>>())
            })
            .collect())
    }

    fn read_logit_rows(&mut self, rows: &[usize]) -> Result<Vec<f32>> {
        let out = self.head_out(&[Head::Top])?;
        let Some(logits) = &out.logits else { bail!("read_logit_rows: the last forward's head kept no logits rows") };
        let mine = self.download_rows(logits, out.rows, rows)?;
        match &self.tp.group {
            Some(group) => Ok(self.tp.shard.assemble_vocab(&group.all_gather(self.tp.shard.rank, &mine)?, rows.len(), self.cfg.vocab_size)),
            None => Ok(mine),
        }
    }

    fn padded_out_rows(&self, batch: &StepBatch, rows: usize) -> usize {
        self.graph_out_rows(batch, rows)
    }

    fn step_forward(
        &mut self,
        batch: &StepBatch,
        out_rows: &[usize],
        head: Head,
        forward: &mut dyn FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        self.graphed_step(batch, out_rows, head, forward)?;
        self.mark_step_end()
    }
}
