//! `dllm bench`: denoising-step and end-to-end numbers, each reported against its physical
//! floor (bytes the step must move / bandwidth measured in the same run) and, for steps, against
//! the PyTorch baseline's JSON (tools/baseline_torch.py) from the same device call.

use crate::backend::shard::Shard;
use crate::backend::{ExpertMath, GraphSteps, Measure};
use crate::config::ModelConfig;
use crate::decode::Policy;
use crate::engine::{Engine, Event, GenParams, RandomFill, Runner};
use crate::rng::Rng;
use anyhow::{bail, Result};
use serde::Serialize;
use std::time::Instant;

pub mod cli;
pub mod engines;
pub mod kernels;
pub mod prefill;
#[cfg(dllm_cuda)]
pub mod random_weights;
pub mod router_balance;
#[cfg(not(dllm_cuda))]
pub mod random_weights {
    /// `generate --random-weights` without the kernels it times.
    pub fn random_weights_steps(
        _preset: &str,
        _prefix_len: usize,
        _block: usize,
        _blocks: usize,
        _seed: u64,
        _profile: bool,
        _quantization: Option<crate::fp8::Quantization>,
    ) -> anyhow::Result<String> {
        anyhow::bail!("--random-weights needs the CUDA backend, and this dllm was built without CUDA kernels")
    }
}

/// Bytes one step must read: every weight it uses once (only the experts its tokens route
/// to; fp8 experts at one byte an element plus their block scales), the KV of every request's
/// prefix and block, and the block's K/V writes.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct StepBytes {
    pub weights: f64,
    pub kv: f64,
}

pub fn step_bytes(c: &ModelConfig, experts_touched: &[usize], batch: usize, prefix: usize, block: usize) -> StepBytes {
    forward_bytes(c, experts_touched, &vec![(prefix, block); batch], true)
}

/// Bytes one forward must move: `chunks` are each request's (first position, tokens), every
/// token attending to the cache before it and to its chunk. `predicts`: the forward ends in the
/// lm_head (a step); otherwise it only stores K/V (a chunked-prefill forward: the last layer
/// reads its input norm and QKV weights and nothing after them, and attends to nothing).
/// `experts_touched` per MoE layer the forward runs (empty: every expert).
pub fn forward_bytes(c: &ModelConfig, experts_touched: &[usize], chunks: &[(usize, usize)], predicts: bool) -> StepBytes {
    let (h, d, v) = (c.hidden_size as f64, c.head_dim() as f64, c.vocab_size as f64);
    let attn = c.qkv_rows() as f64 * h + h * (c.num_attention_heads as f64 * d) + 2.0 * h + 2.0 * d;
    let mut params = 0.0;
    let mut expert_bytes = 0.0;
    let (im, hs) = (c.moe_intermediate_size, c.hidden_size);
    let one_expert = 2.0 * crate::fp8::matrix_bytes(im, hs, c.fp8_experts()) + crate::fp8::matrix_bytes(hs, im, c.fp8_experts());
    let mut moe_layer = 0;
    let layers = c.num_hidden_layers;
    for l in 0..layers {
        if !predicts && l + 1 == layers {
            params += c.qkv_rows() as f64 * h + h + 2.0 * d; // input norm, QKV, q/k norms
            break;
        }
        params += attn;
        if c.is_moe_layer(l) {
            // Without a count (routing not measured) assume every expert is read.
            let e = experts_touched.get(moe_layer).copied().unwrap_or(c.num_experts) as f64;
            moe_layer += 1;
            params += c.num_experts as f64 * h;
            expert_bytes += e * one_expert;
            params += 3.0 * c.shared_intermediate() as f64 * h;
        } else {
            params += 3.0 * c.intermediate_size as f64 * h;
        }
    }
    let tokens = chunks.iter().map(|&(_, n)| n).sum::<usize>() as f64;
    if predicts {
        params += v * h + h + tokens * h; // lm_head, final norm, the embedding rows gathered
    } else {
        params += tokens * h; // the embedding rows gathered
    }
    let kv_row = (c.num_key_value_heads * c.head_dim()) as f64 * 2.0 * 2.0; // K and V, bf16
                                                                            // Each layer reads the cache and the chunk's K/V and writes the chunk's; a K/V-only last
                                                                            // layer only writes.
    let read_write = chunks.iter().map(|&(start, n)| (start + n) + n).sum::<usize>() as f64;
    let kv = if predicts { layers as f64 * read_write * kv_row } else { ((layers - 1) as f64 * read_write + tokens) * kv_row };
    StepBytes { weights: params * 2.0 + expert_bytes, kv }
}

/// What a timed forward carries at the masked positions of each request's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    /// Random non-special ids, drawn afresh for every forward: the block routes like text, as a
    /// trained router spreads a block of masks (the forward's cost does not depend on which ids
    /// it carries). The realistic figure.
    Random,
    /// The mask id, as decoding has it: on random weights a block of masks routes to far fewer
    /// experts than a trained router spreads it over.
    Mask,
}

impl TokenMode {
    pub fn name(self) -> &'static str {
        match self {
            TokenMode::Random => "random",
            TokenMode::Mask => "mask",
        }
    }
}

/// Run `f` with the engine's forwards carrying `mode` at masked positions (random ids seeded
/// from `seed`, avoiding the mask and EOS ids as the prompts do); the engine's own setting after.
pub fn with_tokens<B: Runner, T>(
    engine: &mut Engine<B>,
    mode: TokenMode,
    seed: u64,
    f: impl FnOnce(&mut Engine<B>) -> Result<T>,
) -> Result<T> {
    let fill = match mode {
        TokenMode::Mask => None,
        // Its own stream: the prompts draw from `Rng::new(seed)`, as they did before fills.
        TokenMode::Random => Some(RandomFill::new(seed ^ 0x6d61_736b_6669_6c6c, engine.cfg.vocab_size, &[engine.mask_id, engine.eos_id])?),
    };
    let before = std::mem::replace(&mut engine.mask_fill, fill);
    let out = f(engine);
    engine.mask_fill = before;
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRun {
    pub batch: usize,
    /// What the timed forwards carried at the block's masked positions ("random" or "mask").
    pub tokens: TokenMode,
    /// Tensor-parallel ranks; the bytes, FLOPs and floors below are one rank's.
    pub tp_size: usize,
    /// The timed requests' sampling (0: greedy, the fused pick), top-p and top-k (0: off).
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    /// The step's all-reduces (2 a layer), measured alone on the same GPUs; part of `floor_ms`.
    pub all_reduce_ms: Option<f64>,
    pub prefix: usize,
    pub block: usize,
    /// Median wall time of `Engine::step` over the block's steps after the first.
    pub step_ms: f64,
    pub step_ms_min: f64,
    pub step_ms_max: f64,
    /// The first step: prefill of the prefix plus the first block.
    pub first_step_ms: f64,
    /// Median host time of the timed steps: each step's wall time less the host's wait on the
    /// device in it (Measure::take_device_wait), the time a synchronous step leaves the device
    /// idle at most (the engine's work and the launches). None where the backend does not count.
    pub host_ms: Option<f64>,
    /// Median of the timed steps' wall time less their forward's span on the device's stream
    /// (timing events before its first work and after its last kernel): the time the device
    /// sat idle for the host between forwards. None where the backend does not time spans.
    pub idle_ms: Option<f64>,
    /// What recording the step shapes' CUDA graphs cost (None without graphs).
    pub graph_recording: Option<GraphRecording>,
    pub timed_steps: usize,
    /// Rows through the lm_head a timed step (mean): the block positions still masked, whose
    /// picks the step reads; `flops` counts the lm_head over these.
    pub predicted_rows: f64,
    pub experts_touched_per_layer: f64,
    pub weight_bytes: f64,
    pub kv_bytes: f64,
    /// How the routed experts are stored ("bf16" or "fp8"), which `weight_bytes` counts.
    pub experts_dtype: &'static str,
    /// How the timed forwards' expert GEMMs multiplied ("bf16", "W8A16" or "W8A8": fp8 experts
    /// take W8A8 from a number of rows an expert, `CudaOptions::fp8_activations`).
    pub expert_math: ExpertMath,
    pub bandwidth_gbps: f64,
    /// Matrix FLOPs of the step and the measured bf16 rate (absent on the CPU backend).
    pub flops: f64,
    pub gemm_tflops: Option<f64>,
    pub memory_floor_ms: f64,
    pub compute_floor_ms: Option<f64>,
    /// The binding floor: the larger of the two, plus `all_reduce_ms`.
    pub floor_ms: f64,
    pub over_floor: f64,
    pub baseline_ms: Option<f64>,
    /// Experts/layer the baseline's step routed to; a speedup is quoted only when it is within
    /// 5% of ours (see [`attach_baseline`]).
    pub baseline_experts_per_layer: Option<f64>,
    pub speedup_vs_baseline: Option<f64>,
}

pub struct StepBenchArgs {
    pub batches: Vec<usize>,
    /// Tensor-parallel ranks of the engine (the floor is counted per rank).
    pub tp_size: usize,
    pub prefix: usize,
    pub block: usize,
    /// Steps timed per batch (at most block - 1: the steps of one block after its first).
    pub steps: usize,
    pub seed: u64,
    /// What the timed forwards carry at the block's masked positions.
    pub tokens: TokenMode,
    /// The timed requests' temperature (0: greedy), top-p and top-k (0: off).
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
}

/// Random prompt ids that avoid the special ids (so no request ends early).
pub fn random_prompt(rng: &mut Rng, len: usize, vocab: usize, avoid: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let t = (rng.next_u64() % vocab as u64) as u32;
        if !avoid.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// The shape every step benchmark times: a prefix of whole cached blocks, then `steps` steps of
/// one block after its first (prefill) step.
pub fn check_step_shape(prefix: usize, block: usize, steps: usize) -> Result<()> {
    if block < 2 {
        bail!("--block must be at least 2, got {block}");
    }
    if !prefix.is_multiple_of(block) {
        bail!("--prefix ({prefix}) must be a multiple of --block ({block}) so the prefix is whole cached blocks");
    }
    if steps == 0 || steps >= block {
        bail!("--steps must be between 1 and block - 1 ({})", block - 1);
    }
    Ok(())
}

/// What every step benchmark decodes: one block (`max_new_tokens` of it), one position unmasked
/// a step (random weights make confidences meaningless, so the policy is fixed), no early EOS.
/// How the timed requests pick, for a table's header: temperature 0 is greedy.
pub(crate) fn decoding_label(temperature: f32, top_p: f32, top_k: usize) -> String {
    if temperature > 0.0 {
        format!("sampled, temperature {temperature}, top-p {top_p}, top-k {top_k} (each row drawn where its logits are)")
    } else {
        "greedy (the fused pick)".into()
    }
}

pub(crate) fn one_block_params(block: usize) -> GenParams {
    GenParams { max_new_tokens: block, block_size: block, policy: Policy::FixedCount { k: 1 }, ignore_eos: true, ..GenParams::default() }
}

/// The config one of `tp` ranks runs (its heads and expert columns, ceil(V/tp) lm_head rows):
/// tensor-parallel floors count one rank's bytes and FLOPs.
pub(crate) fn rank_config(cfg: &ModelConfig, tp: usize) -> ModelConfig {
    let shard = Shard { rank: 0, size: tp.max(1) };
    let mut c = shard.local_config(cfg);
    c.vocab_size = shard.vocab(cfg.vocab_size).len();
    c
}

/// The median of figures every step has, or None where some step (or every one) has none.
fn median_of_all(v: &[Option<f64>]) -> Option<f64> {
    v.iter().copied().collect::<Option<Vec<f64>>>().filter(|h| !h.is_empty()).map(|h| median(&h))
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        f64::NAN
    } else {
        s[s.len() / 2]
    }
}

/// Time denoising steps of `batch` requests that each hold `prefix` cached positions and one
/// block of masks; one token is unmasked per step (random weights make confidences
/// meaningless, so the policy is fixed), so every step's forward carries the same tokens (its
/// lm_head predicts one row a request fewer each step: the positions still masked). With
/// `TokenMode::Random` each forward carries random ids at the block's masked positions.
pub fn bench_steps<B: Runner + Measure>(engine: &mut Engine<B>, a: &StepBenchArgs) -> Result<Vec<StepRun>> {
    check_step_shape(a.prefix, a.block, a.steps)?;
    with_tokens(engine, a.tokens, a.seed, |engine| bench_steps_as_set(engine, a))
}

fn bench_steps_as_set<B: Runner + Measure>(engine: &mut Engine<B>, a: &StepBenchArgs) -> Result<Vec<StepRun>> {
    let bandwidth = engine.backend.measure_copy_bandwidth()?;
    let gemm = engine.backend.matmul_ceiling()?;
    // Tensor parallel: the floor is one rank's, each GPU reading its shard (ceil(V/N) of
    // lm_head's rows), plus the all-reduces measured on the same GPUs.
    let tp = a.tp_size.max(1);
    let cfg = rank_config(&engine.cfg, tp);
    let mut rng = Rng::new(a.seed);
    let mut runs = vec![];
    for &batch in &a.batches {
        let _r = crate::nvtx::range_fmt(format_args!("bench batch {batch}"));
        let params = GenParams { temperature: a.temperature, top_p: a.top_p, top_k: a.top_k, ..one_block_params(a.block) };
        // Counting experts syncs once per layer, so it has a pass of its own; the timed pass
        // runs without it on fresh requests.
        engine.backend.count_experts(true);
        run_steps(engine, batch, a, &params, &mut rng)?;
        let touched = engine.backend.experts_touched();
        engine.backend.count_experts(false);
        // The steps of a block predict fewer rows as it unmasks, so they differ in shape: an
        // untimed pass records every shape's CUDA graph, and the timed pass replays them, as a
        // server does once warm.
        let graphs_before = engine.backend.graph_steps();
        let recording = run_steps(engine, batch, a, &params, &mut rng)?.times;
        let recorded = graphs_recorded_since(&engine.backend, graphs_before);
        let StepTimes { times: timed, predicted, host, idle } = run_steps(engine, batch, a, &params, &mut rng)?;
        let later = &timed[1..];
        // The host's part of the timed steps and the device's idle between them (medians),
        // where the backend counts its waits and times its spans.
        let (host_ms, idle_ms) = (median_of_all(&host[1..]), median_of_all(&idle[1..]));
        let graph_recording = recorded.map(|shapes| GraphRecording {
            shapes,
            ms_a_step: (recording[1..].iter().sum::<f64>() - later.iter().sum::<f64>()) / later.len().max(1) as f64,
        });
        // The lm_head's rows: the positions still masked (a mean over the timed steps).
        let predicted = predicted[1..].iter().sum::<usize>() as f64 / later.len().max(1) as f64;
        let bytes = step_bytes(&cfg, &touched, batch, a.prefix, a.block);
        let dims = kernels::StepDims { batch, prefix: a.prefix, block: a.block, predicted };
        let flops: f64 = kernels::step_work(&cfg, &touched, dims, kernels::StepFusions::defaults(false)).iter().map(|k| k.flops).sum();
        // Two all-reduces a layer (after attention, after the MLP/MoE) of the step's f32 rows.
        let all_reduce_ms = match engine.backend.time_all_reduce(batch * a.block * cfg.hidden_size)? {
            Some(s) if tp > 1 => Some(2.0 * cfg.num_hidden_layers as f64 * s * 1e3),
            _ => None,
        };
        let memory_floor_ms = (bytes.weights + bytes.kv) / bandwidth * 1e3;
        let compute_floor_ms = gemm.map(|g| flops / g * 1e3);
        let floor_ms = memory_floor_ms.max(compute_floor_ms.unwrap_or(0.0)) + all_reduce_ms.unwrap_or(0.0);
        let step_ms = median(later);
        runs.push(StepRun {
            batch,
            tokens: a.tokens,
            tp_size: tp,
            temperature: a.temperature,
            top_p: a.top_p,
            top_k: a.top_k,
            all_reduce_ms,
            prefix: a.prefix,
            block: a.block,
            step_ms,
            step_ms_min: later.iter().cloned().fold(f64::MAX, f64::min),
            step_ms_max: later.iter().cloned().fold(0.0, f64::max),
            first_step_ms: timed[0],
            host_ms,
            idle_ms,
            graph_recording,
            timed_steps: later.len(),
            predicted_rows: predicted,
            experts_touched_per_layer: if touched.is_empty() {
                f64::NAN
            } else {
                touched.iter().sum::<usize>() as f64 / touched.len() as f64
            },
            weight_bytes: bytes.weights,
            kv_bytes: bytes.kv,
            experts_dtype: if cfg.fp8_experts() { "fp8" } else { "bf16" },
            expert_math: engine.backend.expert_math(batch * a.block),
            bandwidth_gbps: bandwidth / 1e9,
            flops,
            gemm_tflops: gemm.map(|g| g / 1e12),
            memory_floor_ms,
            compute_floor_ms,
            floor_ms,
            over_floor: step_ms / floor_ms,
            baseline_ms: None,
            baseline_experts_per_layer: None,
            speedup_vs_baseline: None,
        });
    }
    Ok(runs)
}

/// Each step of [`run_steps`]: its wall time in ms, the rows it predicted, its host time in
/// ms (the wall less the host's wait on the device: Measure::take_device_wait) and the device's
/// idle in ms (the wall less the forward's span: Measure::take_step_span); None where the
/// backend does not count them.
struct StepTimes {
    times: Vec<f64>,
    predicted: Vec<usize>,
    host: Vec<Option<f64>>,
    idle: Vec<Option<f64>>,
}

/// Admit `batch` fresh requests, run the first step (prefill + block) and `a.steps` more,
/// then cancel them ([`StepTimes`]).
fn run_steps<B: Runner + Measure>(
    engine: &mut Engine<B>,
    batch: usize,
    a: &StepBenchArgs,
    params: &GenParams,
    rng: &mut Rng,
) -> Result<StepTimes> {
    let avoid = [engine.mask_id, engine.eos_id];
    let mut ids = vec![];
    for _ in 0..batch {
        let p = random_prompt(rng, a.prefix.max(1), engine.cfg.vocab_size, &avoid);
        ids.push(engine.add(p, params.clone())?);
    }
    let (mut times, mut predicted, mut host, mut idle) = (vec![], vec![], vec![], vec![]);
    let mut failed = None;
    let _ = engine.backend.take_device_wait();
    engine.backend.time_step_spans(true)?;
    for _ in 0..=a.steps {
        let t = Instant::now();
        let events = engine.step();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        times.push(ms);
        host.push(engine.backend.take_device_wait().map(|wait| ms - wait * 1e3));
        idle.push(engine.backend.take_step_span()?.map(|span| ms - span * 1e3));
        predicted.push(engine.predicted_rows);
        if let Some(Event::Failed { error, .. }) = events.into_iter().find(|e| matches!(e, Event::Failed { .. })) {
            failed = Some(error);
            break;
        }
    }
    engine.backend.time_step_spans(false)?;
    for id in ids {
        engine.cancel(id);
    }
    match failed {
        Some(e) => bail!("batch {batch}: {e}"),
        None => Ok(StepTimes { times, predicted, host, idle }),
    }
}

/// How far apart ours and the baseline's experts/layer may be for a speedup to be quoted: the
/// step's cost follows the experts it reads, so steps that route differently are not compared.
pub const EXPERTS_AGREE: f64 = 0.05;

/// What a tools/baseline_torch.py run fed its step: `--mask-frac 0` is random ids (the last
/// position masked), anything else a part-masked block; files from before it recorded
/// `mask_frac` ran its default, 0.5.
fn baseline_tokens(run: &serde_json::Value, file: &serde_json::Value) -> TokenMode {
    let frac = run["mask_frac"].as_f64().or_else(|| file["mask_frac"].as_f64()).unwrap_or(0.5);
    if frac == 0.0 {
        TokenMode::Random
    } else {
        TokenMode::Mask
    }
}

/// Fill `baseline_ms` / `baseline_experts_per_layer` from tools/baseline_torch.py's JSON: its
/// run of the same batch, prefix and tokens. `speedup_vs_baseline` only where the two routed
/// alike (experts/layer within [`EXPERTS_AGREE`] of each other).
pub fn attach_baseline(runs: &mut [StepRun], baseline: &serde_json::Value) {
    let Some(b) = baseline["runs"].as_array() else { return };
    for r in runs {
        let hit = b.iter().find(|x| {
            x["batch"].as_u64() == Some(r.batch as u64)
                && x["prefix"].as_u64() == Some(r.prefix as u64)
                && baseline_tokens(x, baseline) == r.tokens
        });
        let Some(x) = hit else { continue };
        if let Some(ms) = x["step_ms"].as_f64() {
            r.baseline_ms = Some(ms);
            r.baseline_experts_per_layer = x["experts_touched_per_layer"].as_f64();
            r.speedup_vs_baseline = match r.baseline_experts_per_layer {
                Some(e) if experts_agree(r.experts_touched_per_layer, e) => Some(ms / r.step_ms),
                _ => None,
            };
        }
    }
}

/// Whether two experts/layer counts are within [`EXPERTS_AGREE`] of each other.
pub fn experts_agree(ours: f64, theirs: f64) -> bool {
    ours > 0.0 && theirs > 0.0 && (ours - theirs).abs() <= EXPERTS_AGREE * ours.max(theirs)
}

pub fn print_step_table(device: &str, runs: &[StepRun]) {
    println!("device: {device}");
    if let Some(r) = runs.first() {
        println!("routed experts: {} (the floor counts their bytes as stored, with the bf16 rest and the KV)", r.experts_dtype);
        println!("decoding: {}", decoding_label(r.temperature, r.top_p, r.top_k));
    }
    println!(
        "{:>5} {:>6} {:>3} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>10} {:>9} {:>9} {:>8}",
        "batch",
        "tokens",
        "tp",
        "prefix",
        "step_ms",
        "first_ms",
        "experts",
        "GB_read",
        "floor_ms",
        "ar_ms",
        "x_floor",
        "GB/s_ceil",
        "base_ms",
        "base_exp",
        "speedup"
    );
    for r in runs {
        let opt = |v: Option<f64>, p: usize| v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "-".into());
        println!(
            "{:>5} {:>6} {:>3} {:>7} {:>9.3} {:>9.1} {:>9.1} {:>9.2} {:>9.3} {:>8} {:>8.2} {:>10.0} {:>9} {:>9} {:>8}",
            r.batch,
            r.tokens.name(),
            r.tp_size,
            r.prefix,
            r.step_ms,
            r.first_step_ms,
            r.experts_touched_per_layer,
            (r.weight_bytes + r.kv_bytes) / 1e9,
            r.floor_ms,
            opt(r.all_reduce_ms, 3),
            r.over_floor,
            r.bandwidth_gbps,
            opt(r.baseline_ms, 3),
            opt(r.baseline_experts_per_layer, 1),
            opt(r.speedup_vs_baseline, 2)
        );
    }
    println!("experts: distinct routed experts per MoE layer in one step; tokens: what the block's masked positions carried");
    if let Some(line) = expert_math_line(runs) {
        println!("{line}");
    }
    let recording: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            r.graph_recording.map(|g| format!("batch {} ({}) {:+.3} ms, {} shapes", r.batch, r.tokens.name(), g.ms_a_step, g.shapes))
        })
        .collect();
    if !recording.is_empty() {
        println!("CUDA graphs recorded in an untimed pass before the timed one, its steps' extra time each: {}", recording.join("; "));
    }
    print_per_batch_ms(runs, "host time a step (its wall time less the host's wait on the device; the device idles for it at most)", |r| {
        r.host_ms
    });
    print_per_batch_ms(
        runs,
        "device idle a step (its wall time less its forward's span on the stream, from the first work to the last kernel)",
        |r| r.idle_ms,
    );
    for r in runs {
        if let (Some(_), None) = (r.baseline_ms, r.speedup_vs_baseline) {
            println!(
                "batch {} ({}): no speedup quoted: the baseline routed to {} experts/layer, ours to {:.1} (more than {:.0}% apart)",
                r.batch,
                r.tokens.name(),
                r.baseline_experts_per_layer.map(|e| format!("{e:.1}")).unwrap_or_else(|| "an unrecorded number of".into()),
                r.experts_touched_per_layer,
                EXPERTS_AGREE * 100.0
            );
        }
    }
}

/// The untimed pass before a row's timed one meets each step shape first: runs it eagerly, then
/// captures and instantiates its CUDA graph. Its steps after the first, less the timed pass's,
/// over their count, is what a recording costs a step (a block's steps predict fewer rows as it
/// unmasks, so each is a shape of its own: `bench generate`'s first block pays it).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GraphRecording {
    /// Step shapes the pass recorded.
    pub shapes: u64,
    /// Its steps' mean extra time over the timed pass's, ms.
    pub ms_a_step: f64,
}

/// The step shapes `b` recorded as CUDA graphs since its counts were `before` (None without graphs).
fn graphs_recorded_since(b: &impl Measure, before: Option<GraphSteps>) -> Option<u64> {
    b.graph_steps().zip(before).map(|(after, before)| after.recorded - before.recorded)
}

/// Which batches' expert GEMMs ran which way, where the experts are fp8 (the way follows the
/// rows a forward routes): "fp8 experts as W8A16 at batch 1, 4; as W8A8 at batch 8, 16".
fn expert_math_line(runs: &[StepRun]) -> Option<String> {
    if runs.iter().all(|r| r.expert_math == ExpertMath::Bf16) {
        return None;
    }
    let mut ways: Vec<(ExpertMath, Vec<usize>)> = vec![];
    for r in runs {
        match ways.iter_mut().find(|(m, _)| *m == r.expert_math) {
            Some((_, batches)) if !batches.contains(&r.batch) => batches.push(r.batch),
            Some(_) => {}
            None => ways.push((r.expert_math, vec![r.batch])),
        }
    }
    let ways: Vec<String> = ways
        .iter()
        .map(|(m, b)| format!("as {} at batch {}", m.name(), b.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")))
        .collect();
    Some(format!("fp8 experts {}", ways.join("; ")))
}

/// A line `what: batch B (tokens) X ms; ...` over the runs that have a figure for `ms`, or none.
fn print_per_batch_ms(runs: &[StepRun], what: &str, ms: impl Fn(&StepRun) -> Option<f64>) {
    let parts: Vec<String> =
        runs.iter().filter_map(|r| ms(r).map(|v| format!("batch {} ({}) {v:.3} ms", r.batch, r.tokens.name()))).collect();
    if !parts.is_empty() {
        println!("{what}: {}", parts.join("; "));
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerateRun {
    pub requests: usize,
    pub prefix: usize,
    pub block: usize,
    pub tokens_per_step: usize,
    pub new_tokens: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub steps: usize,
    pub time_to_first_block_ms: f64,
    /// Most tokens a forward carried (`--chunked-prefill-size`); None when unchunked.
    pub chunked_prefill: Option<usize>,
    /// Step shapes recorded as CUDA graphs during the run (None without graphs): each costs its
    /// step an eager run, a capture and an instantiation (see [`GraphRecording`]).
    pub graph_shapes_recorded: Option<u64>,
}

/// The forward budget a run's JSON records as `chunked_prefill`: None when unchunked.
fn chunked_prefill<B: Runner>(engine: &Engine<B>) -> Option<usize> {
    (engine.max_forward_tokens != usize::MAX).then_some(engine.max_forward_tokens)
}

/// End to end: `requests` requests of `prefix` random ids, `max_new` tokens each, k unmasked
/// per step, all admitted at once.
pub fn bench_generate<B: Runner + Measure>(
    engine: &mut Engine<B>,
    requests: usize,
    prefix: usize,
    block: usize,
    k: usize,
    max_new: usize,
    seed: u64,
) -> Result<GenerateRun> {
    if block == 0 || k == 0 || k > block || requests == 0 || max_new == 0 {
        bail!("bench generate needs --block >= 1, 1 <= --tokens-per-step <= --block, --requests >= 1, --max-new-tokens >= 1");
    }
    let mut rng = Rng::new(seed);
    let params = GenParams {
        max_new_tokens: max_new,
        block_size: block,
        policy: Policy::FixedCount { k },
        steps: Some(block.div_ceil(k)),
        ignore_eos: true,
        ..GenParams::default()
    };
    let avoid = [engine.mask_id, engine.eos_id];
    let graphs_before = engine.backend.graph_steps();
    let t0 = Instant::now();
    for _ in 0..requests {
        let p = random_prompt(&mut rng, prefix.max(1), engine.cfg.vocab_size, &avoid);
        engine.add(p, params.clone())?;
    }
    let (mut first_block, mut done, mut tokens, mut steps) = (None, 0, 0, 0);
    while done < requests {
        steps += 1;
        for ev in engine.step() {
            match ev {
                Event::Block { .. } if first_block.is_none() => first_block = Some(t0.elapsed().as_secs_f64()),
                Event::Done { output, .. } => {
                    done += 1;
                    tokens += output.output_ids.len();
                }
                Event::Failed { error, .. } => bail!(error),
                _ => {}
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(GenerateRun {
        requests,
        prefix,
        block,
        tokens_per_step: k,
        new_tokens: tokens,
        seconds: secs,
        tokens_per_s: tokens as f64 / secs,
        steps,
        time_to_first_block_ms: first_block.unwrap_or(secs) * 1e3,
        chunked_prefill: chunked_prefill(engine),
        graph_shapes_recorded: graphs_recorded_since(&engine.backend, graphs_before),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn mini_floor_matches_the_north_star_arithmetic() {
        // ~145 experts/layer at batch 1 -> about 19 GB with KV: the issue's ~6.3 ms at 3.0 TB/s.
        let c = crate::config::preset("mini").unwrap();
        let b = step_bytes(&c, &[145; 19], 1, 1024, 32);
        let gb = (b.weights + b.kv) / 1e9;
        assert!((15.0..21.0).contains(&gb), "{gb} GB");
        // Every expert counted when routing was not measured.
        let all = step_bytes(&c, &[], 64, 1024, 32);
        assert!(all.weights > b.weights && all.kv > 60.0 * b.kv);
    }

    fn run(batch: usize, tokens: TokenMode, experts: f64, step_ms: f64) -> StepRun {
        StepRun {
            batch,
            tokens,
            tp_size: 1,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            all_reduce_ms: None,
            prefix: 1024,
            block: 32,
            step_ms,
            step_ms_min: step_ms,
            step_ms_max: step_ms,
            first_step_ms: 50.0,
            host_ms: None,
            idle_ms: None,
            graph_recording: None,
            timed_steps: 16,
            predicted_rows: (batch * 32) as f64,
            experts_touched_per_layer: experts,
            weight_bytes: 1e9,
            kv_bytes: 1e6,
            experts_dtype: "bf16",
            expert_math: ExpertMath::Bf16,
            bandwidth_gbps: 3000.0,
            flops: 1e12,
            gemm_tflops: None,
            memory_floor_ms: 1.0,
            compute_floor_ms: None,
            floor_ms: 1.0,
            over_floor: step_ms,
            baseline_ms: None,
            baseline_experts_per_layer: None,
            speedup_vs_baseline: None,
        }
    }

    #[test]
    fn the_fp8_experts_line_names_each_way_with_its_batches() {
        let mut runs: Vec<StepRun> = [1, 4, 8, 16].iter().map(|&b| run(b, TokenMode::Random, 100.0, 5.0)).collect();
        assert_eq!(expert_math_line(&runs), None);
        for (r, m) in runs.iter_mut().zip([ExpertMath::W8A16, ExpertMath::W8A16, ExpertMath::W8A8, ExpertMath::W8A8]) {
            r.expert_math = m;
        }
        // A batch of both token rows is named once.
        runs.push(StepRun { tokens: TokenMode::Mask, ..runs[3].clone() });
        assert_eq!(expert_math_line(&runs).unwrap(), "fp8 experts as W8A16 at batch 1, 4; as W8A8 at batch 8, 16");
        assert_eq!(serde_json::to_value(&runs[0]).unwrap()["expert_math"], "W8A16");
        assert_eq!(serde_json::to_value(run(1, TokenMode::Random, 1.0, 1.0)).unwrap()["expert_math"], "bf16");
    }

    #[test]
    fn a_speedup_is_quoted_only_against_a_baseline_that_routed_alike() {
        let random = serde_json::json!({"mask_frac": 0.0, "runs": [
            {"batch": 1, "prefix": 1024, "step_ms": 8.0, "experts_touched_per_layer": 150.0},
            {"batch": 4, "prefix": 1024, "step_ms": 9.0, "experts_touched_per_layer": 200.0},
        ]});
        // An older file: no mask_frac recorded, so the script's default (a half-masked block).
        let mask = serde_json::json!({"runs": [{"batch": 1, "prefix": 1024, "step_ms": 6.0, "experts_touched_per_layer": 70.0}]});
        let mut runs = vec![
            run(1, TokenMode::Random, 146.0, 4.0),
            run(4, TokenMode::Random, 230.0, 6.0),
            run(1, TokenMode::Mask, 58.0, 5.0),
            run(16, TokenMode::Random, 240.0, 9.0),
        ];
        attach_baseline(&mut runs, &random);
        attach_baseline(&mut runs, &mask);
        // 146 vs 150 experts: within 5%, quoted.
        assert_eq!(
            (runs[0].baseline_ms, runs[0].baseline_experts_per_layer, runs[0].speedup_vs_baseline),
            (Some(8.0), Some(150.0), Some(2.0))
        );
        // 230 vs 200: reported, not quoted.
        assert_eq!((runs[1].baseline_ms, runs[1].baseline_experts_per_layer, runs[1].speedup_vs_baseline), (Some(9.0), Some(200.0), None));
        // The mask row takes the masked baseline, not the random one; 58 vs 70 is too far.
        assert_eq!((runs[2].baseline_ms, runs[2].speedup_vs_baseline), (Some(6.0), None));
        // No baseline run of that batch.
        assert_eq!(runs[3].baseline_ms, None);
        assert!(experts_agree(100.0, 95.0) && !experts_agree(100.0, 94.0) && !experts_agree(0.0, 0.0));
    }

    #[test]
    fn fp8_experts_halve_the_expert_bytes_of_the_floor() {
        let c = crate::config::preset("mini").unwrap();
        let q = c.clone().quantized(Some(crate::fp8::Quantization::Fp8));
        let (b, f) = (step_bytes(&c, &[145; 19], 1, 1024, 32), step_bytes(&q, &[145; 19], 1, 1024, 32));
        let (h, im) = (c.hidden_size as f64, c.moe_intermediate_size as f64);
        // 145 experts x 19 layers x 3 matrices: each loses a byte an element and gains its scales
        // (mini: 4 x 16 blocks of 128 x 128 per matrix, 4 bytes each).
        let saved = 145.0 * 19.0 * 3.0 * (im * h - 4.0 * 16.0 * 4.0);
        assert_eq!(b.weights - f.weights, saved);
        assert_eq!(b.kv, f.kv);
        assert!(f.weights / b.weights < 0.6, "{}", f.weights / b.weights);
    }
}
