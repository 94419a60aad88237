//! `dllm bench step|prefill|generate|kernels`: builds an engine on random weights of a preset (CUDA: made on the
//! device) or on a checkpoint directory, runs the benchmark, prints a table, writes JSON.

use super::engines::{cpu_engine, ModelSource};
use super::prefill::{bench_prefill, print_prefill_table, PrefillBenchArgs};
use super::{attach_baseline, bench_generate, bench_steps, print_step_table, StepBenchArgs, TokenMode};
use crate::backend::{ExpertMath, Measure};
use crate::engine::{Engine, Runner};
use crate::runtime::Device;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Time one denoising step (all layers, lm_head, unmask) per batch size, against the
    /// floor (bytes the step must read / bandwidth measured in the same run) and a baseline.
    Step(StepArgs),
    /// Time the first step of fresh requests (their prompt's block-causal prefill, chunked as
    /// the engine chunks it, and the first block's forward) per prompt length and batch size,
    /// against the floor (matrix FLOPs / bf16 GEMM rate or bytes / bandwidth, both measured in
    /// the same run).
    Prefill(PrefillArgs),
    /// End to end: requests to completion with a fixed number of tokens unmasked per step.
    Generate(GenerateArgs),
    /// Every kernel of a denoising step (CUDA): time per step, bytes, FLOPs, and the fraction
    /// of the binding ceiling (copy bandwidth or bf16 GEMM rate, both measured in this run).
    Kernels(KernelsArgs),
}

#[derive(clap::Args)]
pub struct KernelsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Cached positions per request before its block.
    #[arg(long, default_value_t = 1024)]
    pub prefix: usize,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    /// What the profiled forwards carry at the block's masked positions: `random` non-special
    /// ids (routes like a trained router spreads a block) or the `mask` id (on random weights,
    /// far fewer experts).
    #[arg(long, value_enum, default_value = "random")]
    pub tokens: TokenMode,
    #[command(flatten)]
    pub sampling: Sampling,
}

/// How `bench step` and `bench kernels` have their requests pick.
#[derive(clap::Args, Clone, Copy)]
pub struct Sampling {
    /// The measured requests' sampling temperature: 0 is greedy (the fused pick: lm_head then
    /// row_argmax); above 0 every row is drawn on the device by sample_rows (with --top-p,
    /// --top-k): what sampled decoding costs a step, and sample_rows' row in `bench kernels`.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// 0 keeps every token.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
}

#[derive(clap::Args)]
pub struct Common {
    /// A preset (tiny, mini, flash: random weights) or a checkpoint directory.
    #[arg(long, default_value = "mini")]
    pub preset: String,
    /// The release a preset's config is (llada2.2: block routing, its pool of expert_capacity
    /// experts per block; --block must then be its routing block, 32). A checkpoint says its own.
    #[arg(long, value_enum, default_value = "llada2.0")]
    pub family: crate::config::Family,
    #[arg(long, value_enum, default_value = "cuda")]
    pub device: Device,
    /// Block size (positions denoised together).
    #[arg(long, default_value_t = 32)]
    pub block: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A preset's random weights with each MoE layer's router bias balanced first, as training
    /// balances it (bench::router_balance): a block then routes to about as many experts as a
    /// trained router's (mini at batch 1: ~80 of 256 a layer as drawn, ~150 balanced, as
    /// trained). The default for a preset's per-token routers (issue 13's realistic routing);
    /// `--balanced-router false` keeps the routers as drawn. A checkpoint's trained routers and
    /// LLaDA2.2's block routing are left as they are unless it is asked for (then refused).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub balanced_router: Option<bool>,
    /// --balanced-router's calibration forwards that move the biases (each on fresh prompts:
    /// a layer's routing moves the inputs of the layers after it, so more rounds spread deep
    /// layers more evenly); by default bench::router_balance::BALANCE_ROUNDS. Refused where
    /// nothing is balanced.
    #[arg(long)]
    pub balance_rounds: Option<usize>,
    /// Tensor-parallel ranks (GPUs; with --device cpu, threads). The floor is counted per rank.
    /// `bench kernels` profiles rank 0's shapes standing alone on one GPU (no all-reduces).
    #[arg(long, alias = "tensor-parallel-size", default_value_t = 1)]
    pub tp_size: usize,
    /// Write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// `fp8`: routed experts as block FP8 (random weights: drawn as bf16 and quantized on the
    /// device); the floor then counts their fp8 bytes and scales.
    #[arg(long, value_enum)]
    pub quantization: Option<crate::fp8::Quantization>,
    /// CUDA: rows a work item of the expert GEMMs takes, 16 (the weight stream), 64 or 128
    /// (shared-memory tiles; 128 for bf16 experts on Hopper, else 64), instead of the choice by
    /// rows per expert. For measuring it.
    #[arg(long)]
    pub moe_item_rows: Option<usize>,
    /// CUDA: the dense projections (QKV, attention out, the shared expert, the router) of at most
    /// 32 rows through the weight stream (csrc/dense_stream.cu) instead of cuBLAS. For measuring it.
    #[arg(long)]
    pub dense_stream: bool,
    /// CUDA: the most work items (of the --moe-item-rows rows) the shared expert may take inside
    /// the routed experts' launches before it runs as its own cuBLAS GEMMs. For measuring it.
    #[arg(long)]
    pub shared_expert_items: Option<usize>,
    /// CUDA: CTAs of block_attention an SM (1 to 32) that its key-split rule counts as a wave's
    /// slots in every split (default: the rule's own choice). For measuring it.
    #[arg(long)]
    pub att_ctas_per_sm: Option<usize>,
    /// CUDA: block_attention_deep (one warp-specialized CTA an SM, sm_90a) forced on or off
    /// (default: where every CTA of the launch has an SM to itself). For measuring it.
    #[arg(long)]
    pub att_deep: Option<bool>,
    /// CUDA: block_attention_deep's K/V by TMA (true, the default where the page size allows)
    /// or by cp.async (false). For measuring it.
    #[arg(long)]
    pub att_tma: Option<bool>,
    /// CUDA: the gate_up weight streams hint each warp's weight lines into L2 this many of its
    /// chunks ahead, forced (default: by k, csrc/params.h's STREAM_PREFETCH_*; 0: none). For
    /// measuring it.
    #[arg(long)]
    pub stream_prefetch: Option<usize>,
    /// CUDA: the bf16 expert tiles (64 and 128 rows, Hopper) as persistent warp-specialized CTAs
    /// with TMA weight loads, forced on or off (default: the rule's choice). For measuring it.
    #[arg(long)]
    pub moe_ws_tiles: Option<bool>,
    /// CUDA: bf16 gate_up over 128-row items as 192-row units (an expert's last two items, 128
    /// rows and at most 64, one unit), forced on or off (default: from 96 rows an expert). For
    /// measuring it.
    #[arg(long)]
    pub moe_gate_up_m192: Option<bool>,
    /// CUDA: fp8 experts' 16-row items as shared-memory tiles (true) or the weight stream
    /// (false), forced (default: the tiles). For measuring it.
    #[arg(long)]
    pub fp8_m16_tiles: Option<bool>,
    /// CUDA: fp8 experts' 64-row items on the tiles that widen the codes in registers as
    /// wgmma's A operand (true, the default) or into shared memory (false). For measuring it.
    #[arg(long)]
    pub fp8_codes_in_registers: Option<bool>,
    /// CUDA: fp8 experts on Hopper as W8A8 from 8 rows an expert, 4 at 4096 wide (activations
    /// quantized per row and 128 columns, fp8 wgmma; true, the default) or W8A16 at every batch
    /// (false). For measuring it.
    #[arg(long)]
    pub fp8_activations: Option<bool>,
    /// CUDA: moe_route's one cluster of rows (batch 1) over a cluster of 16 CTAs where the GPU
    /// places one (true, the default) or of 8 (false). For measuring it.
    #[arg(long)]
    pub wide_route: Option<bool>,
    /// CUDA: with fp8 experts' 16-row tiles, the shared expert's (bf16) items taken first
    /// (true, the default) or last (false), as the work list orders them. For measuring it.
    #[arg(long)]
    pub shared_items_first: Option<bool>,
    /// CUDA: with fp8 experts' 16-row tiles and the one-warpgroup bf16 tiles, each down CTA
    /// waiting for its own item's gate_up CTAs (true, the default) or for gate_up's end
    /// (false). For measuring it.
    #[arg(long)]
    pub item_wait: Option<bool>,
    /// CUDA: a MoE layer's expert slots summed by the next layer's input norm (true, the
    /// default) or by moe_combine into an f32 output first (false). For measuring it.
    #[arg(long)]
    pub fused_moe_norm: Option<bool>,
    /// CUDA: qk_norm_rope_store in its vector form at head dims 128 and 256 (true, the
    /// default) or the scalar one (false). For measuring it.
    #[arg(long)]
    pub rope_vectors: Option<bool>,
    /// CUDA: the down weight streams as programmatic dependents of gate_up's (true, the
    /// default) or plain launches (false). For measuring it.
    #[arg(long)]
    pub expert_pdl: Option<bool>,
    /// CUDA: the attention's output projection and the dense MLP's down projection added into
    /// the residual stream by their GEMMs (true, the default) or written out for the next norm
    /// to add (false). For measuring it.
    #[arg(long)]
    pub residual_gemm: Option<bool>,
    /// CUDA: the QKV projection written in bf16 for the QK norm (true, the default) or in f32
    /// (false). For measuring it.
    #[arg(long)]
    pub qkv_bf16: Option<bool>,
    /// CUDA: a greedy step's lm_head as the GEMM with the pick in its epilogue (true, the
    /// default, on Hopper) or as cuBLAS then row_argmax (false). For measuring it.
    #[arg(long)]
    pub fused_pick: Option<bool>,
    /// CUDA: the QKV projection with the QK norm, RoPE and K/V stores in its epilogue (true, the
    /// default, on Hopper from `--fused-qkv-rope-min-rows` rows) or as cuBLAS then
    /// qk_norm_rope_store (false). For measuring it.
    #[arg(long)]
    pub fused_qkv_rope: Option<bool>,
    /// CUDA: the fewest rows a forward's QKV projection takes the fused kernel at (by default
    /// CudaOptions's). For measuring it.
    #[arg(long)]
    pub fused_qkv_rope_min_rows: Option<usize>,
    /// CUDA: a sampled step's logits written in bf16 for the sampler (true, the default) or in
    /// f32 (false). For measuring it.
    #[arg(long)]
    pub sample_bf16: Option<bool>,
    /// CUDA: the router as one launch (logits, selection and, at one cluster's rows, the
    /// permute), forced on or off (default: at up to 32 rows). For measuring it.
    #[arg(long)]
    pub fused_router: Option<bool>,
    /// CUDA: the fraction of the GPU memory left after the weights that the KV cache takes, in
    /// (0, 1] (SGLang's `--mem-fraction-static`; e.g. a small cache under ncu, which saves and
    /// restores the device memory a profiled kernel may write). Default: the CUDA backend's.
    #[arg(long)]
    pub mem_fraction_static: Option<f32>,
    /// CUDA: `--disable-cuda-graph` (to measure what graphs save), `--cuda-graph-max-bs N`.
    #[command(flatten)]
    pub graphs: crate::runtime::GraphFlags,
}

#[derive(clap::Args)]
pub struct StepArgs {
    #[command(flatten)]
    pub common: Common,
    /// Cached positions per request before its block (a multiple of --block).
    #[arg(long, default_value_t = 1024)]
    pub prefix: usize,
    /// Batch sizes (requests per step), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub batch: Vec<usize>,
    /// Steps timed per batch size, after the prefill step.
    #[arg(long, default_value_t = 16)]
    pub steps: usize,
    /// What the timed forwards carry at the block's masked positions, comma-separated (a row
    /// per batch size each): `random` non-special ids, drawn afresh every step, so the block
    /// routes like a trained router spreads it (the step's cost does not depend on which ids
    /// it carries); `mask` the mask id, as decoding has it (on random weights a block of masks
    /// routes to far fewer experts). The unmasking (one position a step) is the same in both.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "random")]
    pub tokens: Vec<TokenMode>,
    /// tools/baseline_torch.py's JSON from the same device (comma-separated for several): each
    /// row takes the baseline run of its batch, prefix and tokens (the baseline's --mask-frac 0
    /// is `random`, else `mask`); speedup_vs_baseline is quoted only when the two route to
    /// within 5% as many experts per layer.
    #[arg(long, value_delimiter = ',')]
    pub baseline: Vec<PathBuf>,
    #[command(flatten)]
    pub sampling: Sampling,
}

#[derive(clap::Args)]
pub struct PrefillArgs {
    #[command(flatten)]
    pub common: Common,
    /// Prompt lengths (random non-special ids), comma-separated. A prompt and the block its
    /// first step denoises must fit the model's positions: with mini's 32768 and --block 32,
    /// the longest prompt is 32736.
    #[arg(long, value_delimiter = ',', default_value = "4096,32736")]
    pub prompt_len: Vec<usize>,
    /// Fresh requests admitted together, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batch: Vec<usize>,
    /// Timed first steps per (prompt length, batch), after an untimed one that counts the
    /// experts; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// What the first block's masked positions carry in its forward: `random` non-special ids
    /// or the `mask` id (see `bench step --tokens`).
    #[arg(long, value_enum, default_value = "random")]
    pub tokens: TokenMode,
    #[command(flatten)]
    pub budget: ForwardBudget,
}

/// The server's token budget a forward, for the benchmarks whose requests bring prompts.
#[derive(clap::Args)]
pub struct ForwardBudget {
    /// Most tokens one forward carries (the server's flag); longer prefills run in forwards of
    /// whole blocks. -1 (any value <= 0) disables chunking.
    #[arg(long, allow_negative_numbers = true, default_value_t = crate::engine::DEFAULT_CHUNKED_PREFILL as i64)]
    pub chunked_prefill_size: i64,
}

impl ForwardBudget {
    fn apply<B: Runner>(&self, engine: &mut Engine<B>) {
        engine.max_forward_tokens = crate::engine::forward_budget(self.chunked_prefill_size);
    }
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub common: Common,
    /// Prompt length (random ids) per request.
    #[arg(long, default_value_t = 1024)]
    pub prefix: usize,
    #[arg(long, default_value_t = 1)]
    pub requests: usize,
    #[arg(long, default_value_t = 1)]
    pub tokens_per_step: usize,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub budget: ForwardBudget,
}

pub fn run(cmd: BenchCmd, process_start: std::time::Instant) -> Result<()> {
    let common = cmd.common();
    match common.device {
        Device::Cpu => {
            if matches!(cmd, BenchCmd::Kernels(_)) {
                bail!("bench kernels times CUDA kernels; use --device cuda");
            }
            let src = ModelSource::parse(&common.preset, common.family);
            if common.tp_size > 1 {
                return run_on(super::engines::cpu_ranks_engine(&src, common.tp_size, common.quantization)?, cmd, process_start);
            }
            run_on(cpu_engine(&src, common.quantization)?, cmd, process_start)
        }
        Device::Cuda | Device::Auto => cuda(cmd, process_start),
    }
}

impl BenchCmd {
    fn common(&self) -> &Common {
        match self {
            BenchCmd::Step(a) => &a.common,
            BenchCmd::Prefill(a) => &a.common,
            BenchCmd::Generate(a) => &a.common,
            BenchCmd::Kernels(a) => &a.common,
        }
    }
}

#[cfg(dllm_cuda)]
fn cuda(cmd: BenchCmd, process_start: std::time::Instant) -> Result<()> {
    use crate::backend::cuda::CudaOptions;
    let common = cmd.common();
    if let Some(rows) = common.moe_item_rows.filter(|r| ![16, 64, 128].contains(r)) {
        bail!("--moe-item-rows takes 16, 64 or 128, got {rows}");
    }
    if let Some(n) = common.att_ctas_per_sm.filter(|n| !(1..=32).contains(n)) {
        bail!("--att-ctas-per-sm takes 1 to 32 (CTAs an SM), got {n}");
    }
    if let Some(m) = common.mem_fraction_static.filter(|m| !(*m > 0.0 && *m <= 1.0)) {
        bail!("--mem-fraction-static must be in (0, 1], got {m}");
    }
    // Per-launch timing is chosen when the backend's kernels are loaded.
    let opts = CudaOptions {
        profile_kernels: matches!(cmd, BenchCmd::Kernels(_)),
        quantization: common.quantization,
        moe_item_rows: common.moe_item_rows,
        dense_stream: common.dense_stream,
        shared_expert_items: common.shared_expert_items,
        att_ctas_per_sm: common.att_ctas_per_sm,
        att_deep: common.att_deep,
        att_tma: common.att_tma,
        stream_prefetch: common.stream_prefetch,
        moe_ws_tiles: common.moe_ws_tiles,
        moe_gate_up_m192: common.moe_gate_up_m192,
        fp8_m16_tiles: common.fp8_m16_tiles,
        fp8_codes_in_registers: common.fp8_codes_in_registers.unwrap_or(CudaOptions::default().fp8_codes_in_registers),
        fp8_activations: common.fp8_activations.unwrap_or(CudaOptions::default().fp8_activations),
        fused_router: common.fused_router,
        wide_route: common.wide_route.unwrap_or(CudaOptions::default().wide_route),
        shared_items_first: common.shared_items_first.unwrap_or(CudaOptions::default().shared_items_first),
        item_wait: common.item_wait.unwrap_or(CudaOptions::default().item_wait),
        fused_moe_norm: common.fused_moe_norm.unwrap_or(CudaOptions::default().fused_moe_norm),
        rope_vectors: common.rope_vectors.unwrap_or(CudaOptions::default().rope_vectors),
        expert_pdl: common.expert_pdl.unwrap_or(CudaOptions::default().expert_pdl),
        residual_gemm: common.residual_gemm.unwrap_or(CudaOptions::default().residual_gemm),
        qkv_bf16: common.qkv_bf16.unwrap_or(CudaOptions::default().qkv_bf16),
        fused_pick: common.fused_pick.unwrap_or(CudaOptions::default().fused_pick),
        fused_qkv_rope: common.fused_qkv_rope.unwrap_or(CudaOptions::default().fused_qkv_rope),
        fused_qkv_rope_min_rows: common.fused_qkv_rope_min_rows.unwrap_or(CudaOptions::default().fused_qkv_rope_min_rows),
        sample_bf16: common.sample_bf16.unwrap_or(CudaOptions::default().sample_bf16),
        mem_fraction_static: common.mem_fraction_static.unwrap_or(CudaOptions::default().mem_fraction_static),
        cuda_graph_max_bs: common.graphs.max_bs(),
        ..CudaOptions::default()
    };
    let src = ModelSource::parse(&common.preset, common.family);
    let (seed, tp_size) = (common.seed, common.tp_size);
    if tp_size > 1 {
        if let BenchCmd::Kernels(a) = cmd {
            // One GPU's kernels: rank 0's shapes, standing alone (no all-reduce).
            return kernels(super::engines::cuda_rank_alone_engine(&src, seed, tp_size, &opts)?, &a);
        }
        return run_on(super::engines::cuda_ranks_engine(&src, seed, tp_size, &opts)?, cmd, process_start);
    }
    let engine = super::engines::cuda_engine(&src, common.seed, &opts)?;
    if let BenchCmd::Kernels(a) = cmd {
        return kernels(engine, &a);
    }
    run_on(engine, cmd, process_start)
}

/// Profile `a.steps` steps of `a.batch` requests after their prefill step. Each launch is timed
/// by a CUDA event pair with the forward queued behind a held stream (Kernels::hold_stream), so
/// the times are GPU time; their sum is the step as the GPU runs it without host gaps.
#[cfg(dllm_cuda)]
fn kernels(mut engine: Engine<crate::backend::cuda::CudaBackend>, a: &KernelsArgs) -> Result<()> {
    let c = &a.common;
    super::check_step_shape(a.prefix, c.block, a.steps + 1)?; // + the step that counts experts
    balance_if_asked(&mut engine, c)?;
    super::with_tokens(&mut engine, a.tokens, c.seed, |engine| profile_steps(engine, a))
}

#[cfg(dllm_cuda)]
fn profile_steps(engine: &mut Engine<crate::backend::cuda::CudaBackend>, a: &KernelsArgs) -> Result<()> {
    use crate::engine::Event;
    let c = &a.common;
    let bandwidth = engine.backend.measure_copy_bandwidth()?;
    let gemm = engine.backend.matmul_ceiling()?.unwrap_or(f64::NAN);
    let params = crate::engine::GenParams {
        temperature: a.sampling.temperature,
        top_p: a.sampling.top_p,
        top_k: a.sampling.top_k,
        ..super::one_block_params(c.block)
    };
    let mut rng = crate::rng::Rng::new(c.seed);
    let avoid = [engine.mask_id, engine.eos_id];
    let mut ids = vec![];
    for _ in 0..a.batch {
        let p = super::random_prompt(&mut rng, a.prefix.max(1), engine.cfg.vocab_size, &avoid);
        ids.push(engine.add(p, params.clone())?);
    }
    let check = |evs: Vec<Event>| match evs.into_iter().find_map(|e| if let Event::Failed { error, .. } = e { Some(error) } else { None }) {
        Some(e) => bail!(e),
        None => Ok(()),
    };
    check(engine.step())?; // prefill + first step: neither counted nor profiled
                           // The experts one denoising step touches (counting syncs per layer, so not while profiling).
    engine.backend.count_experts(true);
    check(engine.step())?;
    let touched = engine.backend.experts_touched();
    engine.backend.count_experts(false);
    engine.backend.profile_reset();
    let mut predicted = 0;
    for _ in 0..a.steps {
        check(engine.step())?;
        predicted += engine.predicted_rows;
    }
    let n = a.steps as f64;
    let measured: Vec<(String, f64, f64)> =
        engine.backend.profile().into_iter().map(|(k, ms, calls)| (k, ms / n, calls as f64 / n)).collect();
    for id in ids {
        engine.cancel(id);
    }
    let shared_in_experts = engine.backend.shared_expert_in_items(a.batch * c.block);
    let dims = super::kernels::StepDims { batch: a.batch, prefix: a.prefix, block: c.block, predicted: predicted as f64 / n };
    let defaults = crate::backend::cuda::CudaOptions::default();
    // The weight stream, where it takes the projections, neither adds into the residual nor
    // writes bf16.
    let cublas = !(c.dense_stream && a.batch * c.block <= crate::backend::cuda::kernels::params::DENSE_STREAM_ROWS);
    let fused = super::kernels::StepFusions {
        shared_in_experts,
        fused_moe_norm: c.fused_moe_norm.unwrap_or(defaults.fused_moe_norm),
        residual_gemm: c.residual_gemm.unwrap_or(defaults.residual_gemm) && cublas,
        qkv_bf16: c.qkv_bf16.unwrap_or(defaults.qkv_bf16) && cublas,
        logits_bf16: a.sampling.temperature > 0.0 && c.sample_bf16.unwrap_or(defaults.sample_bf16),
        w8a8_experts: engine.backend.expert_math(a.batch * c.block) == ExpertMath::W8A8,
        fused_pick: a.sampling.temperature == 0.0 && engine.backend.fuses_pick(),
        fused_qkv_rope: engine.backend.fuses_qkv_rope(a.batch * c.block),
    };
    let work = super::kernels::step_work(&engine.cfg, &touched, dims, fused);
    let rows = super::kernels::rows(&measured, &work, bandwidth, gemm);
    println!(
        "device: {}  batch {}  prefix {}  block {}  tokens {}  decoding: {}  experts/layer {:.1}  ceilings: copy {:.0} GB/s, bf16 GEMM {:.0} TFLOP/s",
        engine.backend.label(),
        a.batch,
        a.prefix,
        c.block,
        a.tokens.name(),
        super::decoding_label(a.sampling.temperature, a.sampling.top_p, a.sampling.top_k),
        touched.iter().sum::<usize>() as f64 / touched.len().max(1) as f64,
        bandwidth / 1e9,
        gemm / 1e12
    );
    super::kernels::print_rows(&rows);
    let gpu_ms: f64 = measured.iter().map(|m| m.1).sum();
    println!("sum of kernel times: {gpu_ms:.3} ms per step (the step as the GPU runs it, without launch gaps)");
    if let Some(p) = &c.json {
        let v = serde_json::json!({"device": engine.backend.label(), "commit": option_env!("DLLM_COMMIT").unwrap_or("unknown"),
            "batch": a.batch, "prefix": a.prefix, "block": c.block, "tokens": a.tokens, "temperature": a.sampling.temperature,
            "top_p": a.sampling.top_p, "top_k": a.sampling.top_k, "experts_touched": touched,
            "bandwidth_gbps": bandwidth / 1e9, "gemm_tflops": gemm / 1e12, "kernels": rows,
            "kernel_sum_ms": gpu_ms,
            "timing": "CUDA event pair per launch, forward queued behind a held stream (GPU time, no launch gaps), averaged over the profiled steps"});
        std::fs::write(p, serde_json::to_string_pretty(&v)? + "\n").with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

#[cfg(not(dllm_cuda))]
fn cuda(_cmd: BenchCmd, _process_start: std::time::Instant) -> Result<()> {
    bail!("this dllm was built without CUDA kernels; use --device cpu (tiny or a checkpoint)")
}

/// `--balanced-router` (by default for a preset's per-token routers): balance the random weights'
/// routers before anything is measured, and say what it did (None where they stay as they are).
fn balance_if_asked<B: Runner + Measure>(engine: &mut Engine<B>, c: &Common) -> Result<Option<super::router_balance::RouterBalance>> {
    let checkpoint = match ModelSource::parse(&c.preset, c.family) {
        ModelSource::Checkpoint(dir) => Some(dir),
        _ => None,
    };
    // --balance-rounds where no balancing runs would be silently ignored.
    let unused_rounds = || match c.balance_rounds {
        Some(_) => bail!("--balance-rounds sets --balanced-router's rounds, but these routers are not balanced"),
        None => Ok(None),
    };
    match c.balanced_router {
        Some(false) => {
            println!("routers as drawn (--balanced-router false): a block routes to fewer experts than a trained router's");
            return unused_rounds();
        }
        None if checkpoint.is_some() || engine.cfg.block_routing().is_some() => return unused_rounds(),
        None => {}
        Some(true) => {
            if let Some(dir) = checkpoint {
                bail!("--balanced-router balances a preset's random weights; {} holds its own expert bias", dir.display());
            }
        }
    }
    let t = std::time::Instant::now();
    let (cfg, avoid) = (engine.cfg.clone(), [engine.mask_id, engine.eos_id]);
    let rounds = c.balance_rounds.unwrap_or(super::router_balance::BALANCE_ROUNDS);
    let r = super::router_balance::balance_router(&mut engine.backend, &cfg, &avoid, c.block, rounds, c.seed)?;
    println!(
        "routers balanced as training balances them ({:.1} s, forwards of {} rows): a block of {} rows routes to {:.1} experts a layer ({:.1} as drawn), the busiest expert takes {:.2}x the mean ({:.2}x as drawn)",
        t.elapsed().as_secs_f64(),
        r.rows,
        r.block,
        r.after.experts_per_block,
        r.before.experts_per_block,
        r.after.busiest_over_mean,
        r.before.busiest_over_mean
    );
    Ok(Some(r))
}

fn run_on<B: Runner + Measure>(mut engine: Engine<B>, cmd: BenchCmd, process_start: std::time::Instant) -> Result<()> {
    let ready_s = process_start.elapsed().as_secs_f64();
    let balance = balance_if_asked(&mut engine, cmd.common())?;
    let device = engine.backend.label();
    let commit = option_env!("DLLM_COMMIT").unwrap_or("unknown");
    let (json, path) = match cmd {
        BenchCmd::Step(a) => {
            let c = &a.common;
            if a.tokens.is_empty() {
                bail!("--tokens needs at least one of random, mask");
            }
            // Read the baselines first: a bad path fails before minutes of measuring.
            let mut baselines = vec![];
            for p in &a.baseline {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                baselines.push(serde_json::from_str::<serde_json::Value>(&text).with_context(|| format!("{} is not JSON", p.display()))?);
            }
            let mut runs = vec![];
            for &tokens in &a.tokens {
                let args = StepBenchArgs {
                    batches: a.batch.clone(),
                    tp_size: c.tp_size,
                    prefix: a.prefix,
                    block: c.block,
                    steps: a.steps,
                    seed: c.seed,
                    tokens,
                    temperature: a.sampling.temperature,
                    top_p: a.sampling.top_p,
                    top_k: a.sampling.top_k,
                };
                runs.extend(bench_steps(&mut engine, &args)?);
            }
            for b in &baselines {
                attach_baseline(&mut runs, b);
            }
            print_step_table(&device, &runs);
            let v = serde_json::json!({"device": device, "commit": commit, "preset": c.preset,
                "command": std::env::args().collect::<Vec<_>>().join(" "), "runs": runs});
            (v, c.json.clone())
        }
        BenchCmd::Prefill(a) => {
            let c = &a.common;
            let args = PrefillBenchArgs {
                prompt_lens: a.prompt_len.clone(),
                batches: a.batch.clone(),
                tp_size: c.tp_size,
                block: c.block,
                repeats: a.repeats,
                seed: c.seed,
                tokens: a.tokens,
            };
            a.budget.apply(&mut engine);
            let runs = bench_prefill(&mut engine, &args)?;
            print_prefill_table(&device, &runs);
            let v = serde_json::json!({"device": device, "commit": commit, "preset": c.preset,
                "command": std::env::args().collect::<Vec<_>>().join(" "), "runs": runs});
            (v, c.json.clone())
        }
        BenchCmd::Generate(a) => {
            let c = &a.common;
            a.budget.apply(&mut engine);
            let r = bench_generate(&mut engine, a.requests, a.prefix, c.block, a.tokens_per_step, a.max_new_tokens, c.seed)?;
            println!(
                "device: {device}\nready {ready_s:.2} s after start; {} requests x {} tokens in {:.3} s: {:.1} tokens/s, {} steps, first block after {:.1} ms{}",
                r.requests,
                a.max_new_tokens,
                r.seconds,
                r.tokens_per_s,
                r.steps,
                r.time_to_first_block_ms,
                r.graph_shapes_recorded.map(|n| format!(", {n} step shapes recorded as CUDA graphs")).unwrap_or_default()
            );
            let v = serde_json::json!({"device": device, "commit": commit, "preset": c.preset, "startup_s": ready_s,
                "command": std::env::args().collect::<Vec<_>>().join(" "), "run": r});
            (v, c.json.clone())
        }
        BenchCmd::Kernels(_) => bail!("bench kernels runs on the CUDA backend only"),
    };
    let json = match (json, balance) {
        (serde_json::Value::Object(mut o), Some(b)) => {
            o.insert("router_balance".into(), serde_json::to_value(b)?);
            serde_json::Value::Object(o)
        }
        (j, _) => j,
    };
    if let Some(p) = path {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        std::fs::write(&p, serde_json::to_string_pretty(&json)? + "\n").with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
