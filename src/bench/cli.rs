//! `dllm bench step|generate`: builds an engine on random weights of a preset (CUDA: made on the
//! device) or on a checkpoint directory, runs the benchmark, prints a table, writes JSON.

use super::engines::{cpu_engine, ModelSource};
use super::{attach_baseline, bench_generate, bench_steps, print_step_table, StepBenchArgs};
use crate::backend::Measure;
use crate::engine::{Engine, Runner};
use crate::runtime::Device;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Time one denoising step (all layers, lm_head, unmask) per batch size, against the
    /// floor (bytes the step must read / bandwidth measured in the same run) and a baseline.
    Step(StepArgs),
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
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
}

#[derive(clap::Args)]
pub struct Common {
    /// A preset (tiny, mini, flash: random weights) or a checkpoint directory.
    #[arg(long, default_value = "mini")]
    pub preset: String,
    #[arg(long, value_enum, default_value = "cuda")]
    pub device: Device,
    #[arg(long, default_value_t = 1024)]
    pub prefix: usize,
    #[arg(long, default_value_t = 32)]
    pub block: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tensor-parallel ranks (GPUs; with --device cpu, threads). The floor is counted per rank.
    #[arg(long, alias = "tensor-parallel-size", default_value_t = 1)]
    pub tp_size: usize,
    /// Write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// `fp8`: routed experts as block FP8 (random weights: drawn as bf16 and quantized on the
    /// device); the floor then counts their fp8 bytes and scales.
    #[arg(long, value_enum)]
    pub quantization: Option<crate::fp8::Quantization>,
    /// CUDA: rows a work item of the expert GEMMs takes, 16 (the weight stream) or 64
    /// (shared-memory tiles), instead of the choice by rows per expert. For measuring it.
    #[arg(long)]
    pub moe_item_rows: Option<usize>,
}

#[derive(clap::Args)]
pub struct StepArgs {
    #[command(flatten)]
    pub common: Common,
    /// Batch sizes (requests per step), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub batch: Vec<usize>,
    /// Steps timed per batch size, after the prefill step.
    #[arg(long, default_value_t = 16)]
    pub steps: usize,
    /// tools/baseline_torch.py's JSON from the same device, for speedup_vs_baseline.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 1)]
    pub requests: usize,
    #[arg(long, default_value_t = 1)]
    pub tokens_per_step: usize,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
}

pub fn run(cmd: BenchCmd, process_start: std::time::Instant) -> Result<()> {
    let common = cmd.common();
    match common.device {
        Device::Cpu => {
            if matches!(cmd, BenchCmd::Kernels(_)) {
                bail!("bench kernels times CUDA kernels; use --device cuda");
            }
            let src = ModelSource::parse(&common.preset);
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
            BenchCmd::Generate(a) => &a.common,
            BenchCmd::Kernels(a) => &a.common,
        }
    }
}

#[cfg(dllm_cuda)]
fn cuda(cmd: BenchCmd, process_start: std::time::Instant) -> Result<()> {
    use crate::backend::cuda::CudaOptions;
    let common = cmd.common();
    if let Some(rows) = common.moe_item_rows.filter(|r| ![16, 64].contains(r)) {
        bail!("--moe-item-rows takes 16 or 64, got {rows}");
    }
    // Per-launch timing is chosen when the backend's kernels are loaded.
    let opts = CudaOptions {
        profile_kernels: matches!(cmd, BenchCmd::Kernels(_)),
        quantization: common.quantization,
        moe_item_rows: common.moe_item_rows,
        ..CudaOptions::default()
    };
    let src = ModelSource::parse(&common.preset);
    if common.tp_size > 1 {
        if matches!(cmd, BenchCmd::Kernels(_)) {
            bail!("bench kernels profiles one GPU's kernels; use --tp-size 1");
        }
        return run_on(super::engines::cuda_ranks_engine(&src, common.seed, common.tp_size, &opts)?, cmd, process_start);
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
    use crate::decode::Policy;
    use crate::engine::{Event, GenParams};
    let c = &a.common;
    super::check_step_shape(c.prefix, c.block, a.steps + 1)?; // + the step that counts experts
    let bandwidth = engine.backend.measure_copy_bandwidth()?;
    let gemm = engine.backend.matmul_ceiling()?.unwrap_or(f64::NAN);
    let params = GenParams {
        max_new_tokens: c.block,
        block_size: c.block,
        policy: Policy::FixedCount { k: 1 },
        ignore_eos: true,
        ..GenParams::default()
    };
    let mut rng = crate::rng::Rng::new(c.seed);
    let avoid = [engine.mask_id, engine.eos_id];
    let mut ids = vec![];
    for _ in 0..a.batch {
        let p = super::random_prompt(&mut rng, c.prefix.max(1), engine.cfg.vocab_size, &avoid);
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
    for _ in 0..a.steps {
        check(engine.step())?;
    }
    let n = a.steps as f64;
    let measured: Vec<(String, f64, f64)> =
        engine.backend.profile().into_iter().map(|(k, ms, calls)| (k, ms / n, calls as f64 / n)).collect();
    for id in ids {
        engine.cancel(id);
    }
    let work = super::kernels::step_work(&engine.cfg, &touched, a.batch, c.prefix, c.block);
    let rows = super::kernels::rows(&measured, &work, bandwidth, gemm);
    println!(
        "device: {}  batch {}  prefix {}  block {}  experts/layer {:.1}  ceilings: copy {:.0} GB/s, bf16 GEMM {:.0} TFLOP/s",
        engine.backend.label(),
        a.batch,
        c.prefix,
        c.block,
        touched.iter().sum::<usize>() as f64 / touched.len().max(1) as f64,
        bandwidth / 1e9,
        gemm / 1e12
    );
    super::kernels::print_rows(&rows);
    let gpu_ms: f64 = measured.iter().map(|m| m.1).sum();
    println!("sum of kernel times: {gpu_ms:.3} ms per step (the step as the GPU runs it, without launch gaps)");
    if let Some(p) = &c.json {
        let v = serde_json::json!({"device": engine.backend.label(), "commit": option_env!("DLLM_COMMIT").unwrap_or("unknown"),
            "batch": a.batch, "prefix": c.prefix, "block": c.block, "experts_touched": touched,
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

fn run_on<B: Runner + Measure>(mut engine: Engine<B>, cmd: BenchCmd, process_start: std::time::Instant) -> Result<()> {
    let ready_s = process_start.elapsed().as_secs_f64();
    let device = engine.backend.label();
    let commit = option_env!("DLLM_COMMIT").unwrap_or("unknown");
    let (json, path) = match cmd {
        BenchCmd::Step(a) => {
            let c = &a.common;
            let args = StepBenchArgs {
                batches: a.batch.clone(),
                tp_size: c.tp_size,
                prefix: c.prefix,
                block: c.block,
                steps: a.steps,
                seed: c.seed,
            };
            let mut runs = bench_steps(&mut engine, &args)?;
            if let Some(p) = &a.baseline {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                attach_baseline(&mut runs, &serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))?);
            }
            print_step_table(&device, &runs);
            let v = serde_json::json!({"device": device, "commit": commit, "preset": c.preset,
                "command": std::env::args().collect::<Vec<_>>().join(" "), "runs": runs});
            (v, c.json.clone())
        }
        BenchCmd::Generate(a) => {
            let c = &a.common;
            let r = bench_generate(&mut engine, a.requests, c.prefix, c.block, a.tokens_per_step, a.max_new_tokens, c.seed)?;
            println!(
                "device: {device}\nready {ready_s:.2} s after start; {} requests x {} tokens in {:.3} s: {:.1} tokens/s, {} steps, first block after {:.1} ms",
                r.requests, a.max_new_tokens, r.seconds, r.tokens_per_s, r.steps, r.time_to_first_block_ms
            );
            let v = serde_json::json!({"device": device, "commit": commit, "preset": c.preset, "startup_s": ready_s,
                "command": std::env::args().collect::<Vec<_>>().join(" "), "run": r});
            (v, c.json.clone())
        }
        BenchCmd::Kernels(_) => bail!("bench kernels runs on the CUDA backend only"),
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
