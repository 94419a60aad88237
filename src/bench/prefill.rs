//! `dllm bench prefill`: the first step of fresh requests (their prompts' block-causal prefill,
//! chunked as the engine chunks it, and the first block's forward), against its floor: the
//! matrix FLOPs the step must do over the bf16 GEMM rate, or the bytes its forwards must move
//! over the copy bandwidth, whichever is longer (both ceilings measured in the same run).

use super::{forward_bytes, median, random_prompt, with_tokens, TokenMode};
use crate::backend::Measure;
use crate::config::ModelConfig;
use crate::decode::blocks::BlockLayout;
use crate::engine::{Engine, Event, GenParams, Runner, MAX_BLOCK_SIZE};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

pub struct PrefillBenchArgs {
    /// Prompt lengths (random ids), each run at every batch size.
    pub prompt_lens: Vec<usize>,
    /// Fresh requests admitted together.
    pub batches: Vec<usize>,
    /// Tensor-parallel ranks of the engine (the floor is counted per rank).
    pub tp_size: usize,
    pub block: usize,
    /// Timed first steps per (prompt length, batch); the median is reported.
    pub repeats: usize,
    pub seed: u64,
    /// What the first block's masked positions carry in its forward.
    pub tokens: TokenMode,
}

/// One forward of a first step: each request's chunk as (first position, tokens), and whether it
/// predicts (the step's own forward, ending in the lm_head over each request's block) or only
/// stores K/V (a chunked-prefill forward).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forward {
    pub chunks: Vec<(usize, usize)>,
    pub predicts: bool,
    /// Distinct routed experts per MoE layer the forward ran, as counted.
    pub experts_touched: Vec<usize>,
}

impl Forward {
    pub fn tokens(&self) -> usize {
        self.chunks.iter().map(|c| c.1).sum()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ForwardRun {
    pub tokens: usize,
    pub predicts: bool,
    pub experts_touched_per_layer: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PrefillRun {
    pub prompt_len: usize,
    pub batch: usize,
    pub block: usize,
    /// What the first block's masked positions carried ("random" or "mask").
    pub tokens: TokenMode,
    /// Tensor-parallel ranks; the bytes, FLOPs and floors below are one rank's.
    pub tp_size: usize,
    /// Median wall time of the first `Engine::step` of `batch` fresh requests: every forward
    /// of their prefill and their first block's, the picks on the host.
    pub ms: f64,
    pub ms_min: f64,
    pub ms_max: f64,
    pub repeats: usize,
    /// Prompt tokens prefilled per second (batch x prompt_len / ms).
    pub tokens_per_s: f64,
    /// The engine's forward budget (`--chunked-prefill-size`): prompts past it are prefilled in
    /// forwards of whole blocks.
    pub chunked_prefill: Option<usize>,
    /// The step's forwards in order: chunked-prefill forwards, then the step's own.
    pub forwards: Vec<ForwardRun>,
    /// Distinct routed experts per MoE layer, averaged over every MoE layer of every forward.
    pub experts_touched_per_layer: f64,
    /// Matrix FLOPs: projections, dense MLPs, router, routed experts per (token, expert) pair,
    /// shared expert, block-causal attention (QK^T and PV), lm_head over the predicted rows.
    pub flops: f64,
    pub gemm_tflops: Option<f64>,
    pub compute_floor_ms: Option<f64>,
    pub weight_bytes: f64,
    pub kv_bytes: f64,
    /// How the routed experts are stored ("bf16" or "fp8"), which `weight_bytes` counts.
    pub experts_dtype: &'static str,
    pub bandwidth_gbps: f64,
    pub memory_floor_ms: f64,
    /// The forwards' all-reduces (2 a layer), measured alone on the same GPUs; part of `floor_ms`.
    pub all_reduce_ms: Option<f64>,
    /// The binding floor: the larger of the two, plus `all_reduce_ms`.
    pub floor_ms: f64,
    /// "compute" or "memory": which floor binds.
    pub bound: &'static str,
    pub over_floor: f64,
}

/// Matrix FLOPs the forwards must do. Every carried token runs every layer but the last, whose
/// QKV it needs for the cache; only the rows a forward predicts (each request's block, the last
/// `block` positions of its chunk) run the rest of the last layer and the lm_head. Attention is
/// block-causal: a token of block j attends to keys 0..(j + 1) x block. Routed experts count per
/// (token, expert) pair (top-k of them a token), so the FLOPs do not depend on the routing.
pub fn prefill_flops(c: &ModelConfig, forwards: &[Forward], block: usize) -> f64 {
    let (h, d) = (c.hidden_size as f64, c.head_dim() as f64);
    let nh = c.num_attention_heads as f64;
    let qkv = 2.0 * h * c.qkv_rows() as f64;
    let out = 2.0 * nh * d * h;
    let ffn = |l: usize| {
        if c.is_moe_layer(l) {
            let (e, k, im) = (c.num_experts as f64, c.num_experts_per_tok as f64, c.moe_intermediate_size as f64);
            2.0 * h * e + k * 2.0 * 3.0 * h * im + 2.0 * 3.0 * h * c.shared_intermediate() as f64
        } else {
            2.0 * 3.0 * h * c.intermediate_size as f64
        }
    };
    let last = c.num_hidden_layers - 1;
    // Per token: every layer but the last in full (attention scores aside), the last's QKV.
    let but_last: f64 = (0..last).map(|l| qkv + out + ffn(l)).sum::<f64>() + qkv;
    // Per predicted row: the rest of the last layer, and the lm_head.
    let predicted_row = out + ffn(last) + 2.0 * h * c.vocab_size as f64;
    // QK^T and PV: 2 x 2 x heads x head_dim FLOPs a (query, key) pair, per layer.
    let keys = |p: usize| ((p / block + 1) * block) as f64;
    let mut flops = 0.0;
    for f in forwards {
        for &(start, n) in &f.chunks {
            let pair_sum: f64 = (start..start + n).map(keys).sum();
            flops += n as f64 * but_last + 4.0 * nh * d * pair_sum * last as f64;
            if f.predicts {
                let rows = start + n.saturating_sub(block)..start + n;
                let last_pairs: f64 = rows.clone().map(keys).sum();
                flops += rows.len() as f64 * predicted_row + 4.0 * nh * d * last_pairs;
            }
        }
    }
    flops
}

/// Clear errors for what the engine cannot run, before anything is measured.
pub fn check_prefill_args<B: Runner>(engine: &Engine<B>, a: &PrefillBenchArgs) -> Result<()> {
    if a.prompt_lens.is_empty() || a.batches.is_empty() {
        bail!("--prompt-len and --batch each need at least one value");
    }
    if a.block == 0 || a.block > MAX_BLOCK_SIZE {
        bail!("--block must be between 1 and {MAX_BLOCK_SIZE}, got {}", a.block);
    }
    if a.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    if let Some(b) = a.batches.iter().find(|&&b| b == 0) {
        bail!("--batch must be at least 1, got {b}");
    }
    let ctx = engine.context_len;
    let longest = (ctx / a.block).saturating_sub(1) * a.block;
    for &len in &a.prompt_lens {
        if len == 0 {
            bail!("--prompt-len must be at least 1");
        }
        let layout = BlockLayout { prompt_len: len, block_size: a.block, max_new_tokens: a.block };
        if layout.total_len() > ctx {
            bail!(
                "--prompt-len {len} does not fit: with the block of {} its first step denoises it needs {} positions, and a sequence holds {ctx} \
                 (the model's max_position_embeddings {}, the KV cache's {} a sequence); the longest prompt is {longest}",
                a.block,
                layout.total_len(),
                engine.cfg.max_position_embeddings,
                engine.backend.seq_capacity()
            );
        }
    }
    Ok(())
}

/// Time the first step of `batch` fresh requests per (prompt length, batch): their prompts'
/// prefill (chunked by the engine's forward budget) and the first block's forward. A counting
/// pass (untimed: counting syncs) first runs the same forwards one at a time to see the experts
/// each routes to; then `repeats` timed passes on fresh requests.
pub fn bench_prefill<B: Runner + Measure>(engine: &mut Engine<B>, a: &PrefillBenchArgs) -> Result<Vec<PrefillRun>> {
    check_prefill_args(engine, a)?;
    with_tokens(engine, a.tokens, a.seed, |engine| bench_prefill_as_set(engine, a))
}

fn bench_prefill_as_set<B: Runner + Measure>(engine: &mut Engine<B>, a: &PrefillBenchArgs) -> Result<Vec<PrefillRun>> {
    let bandwidth = engine.backend.measure_copy_bandwidth()?;
    let gemm = engine.backend.matmul_ceiling()?;
    let tp = a.tp_size.max(1);
    let cfg = super::rank_config(&engine.cfg, tp);
    let params = super::one_block_params(a.block);
    let mut rng = Rng::new(a.seed);
    let mut all_reduce_s: BTreeMap<usize, Option<f64>> = BTreeMap::new();
    let mut runs = vec![];
    for &len in &a.prompt_lens {
        for &batch in &a.batches {
            let _r = crate::nvtx::range_fmt(format_args!("bench prefill {len} x {batch}"));
            let what = || format!("prompt length {len}, batch {batch}");
            engine.backend.count_experts(true);
            let counted = counted_first_step(engine, batch, len, &params, &mut rng);
            engine.backend.count_experts(false);
            let forwards = counted.with_context(what)?;
            let mut times = vec![];
            for _ in 0..a.repeats {
                let before = engine.prefill_forwards;
                times.push(timed_first_step(engine, batch, len, &params, &mut rng).with_context(what)?);
                let ran = engine.prefill_forwards - before + 1;
                if ran != forwards.len() as u64 {
                    bail!("{}: the timed step ran {ran} forwards, the counted one {}", what(), forwards.len());
                }
            }
            let flops = prefill_flops(&cfg, &forwards, a.block);
            let (mut weights, mut kv) = (0.0, 0.0);
            let mut ar_s: Option<f64> = None;
            for f in &forwards {
                let b = forward_bytes(&cfg, &f.experts_touched, &f.chunks, f.predicts);
                weights += b.weights;
                kv += b.kv;
                if tp > 1 {
                    // Two all-reduces a layer the forward finishes (a K/V-only last layer has none).
                    let rows = f.tokens() * cfg.hidden_size;
                    let one = match all_reduce_s.get(&rows) {
                        Some(s) => *s,
                        None => {
                            let s = engine.backend.time_all_reduce(rows)?;
                            all_reduce_s.insert(rows, s);
                            s
                        }
                    };
                    let layers = cfg.num_hidden_layers - usize::from(!f.predicts);
                    if let Some(s) = one {
                        *ar_s.get_or_insert(0.0) += s * 2.0 * layers as f64;
                    }
                }
            }
            let all_reduce_ms = ar_s.map(|s| s * 1e3);
            let memory_floor_ms = (weights + kv) / bandwidth * 1e3;
            let compute_floor_ms = gemm.map(|g| flops / g * 1e3);
            let compute = compute_floor_ms.unwrap_or(0.0);
            let floor_ms = memory_floor_ms.max(compute) + all_reduce_ms.unwrap_or(0.0);
            let ms = median(&times);
            let counts: Vec<usize> = forwards.iter().flat_map(|f| f.experts_touched.iter().copied()).collect();
            runs.push(PrefillRun {
                prompt_len: len,
                batch,
                block: a.block,
                tokens: a.tokens,
                tp_size: tp,
                ms,
                ms_min: times.iter().cloned().fold(f64::MAX, f64::min),
                ms_max: times.iter().cloned().fold(0.0, f64::max),
                repeats: a.repeats,
                tokens_per_s: (batch * len) as f64 / (ms / 1e3),
                chunked_prefill: super::chunked_prefill(engine),
                forwards: forwards
                    .iter()
                    .map(|f| ForwardRun { tokens: f.tokens(), predicts: f.predicts, experts_touched_per_layer: mean(&f.experts_touched) })
                    .collect(),
                experts_touched_per_layer: mean(&counts),
                flops,
                gemm_tflops: gemm.map(|g| g / 1e12),
                compute_floor_ms,
                weight_bytes: weights,
                kv_bytes: kv,
                experts_dtype: if cfg.fp8_experts() { "fp8" } else { "bf16" },
                bandwidth_gbps: bandwidth / 1e9,
                memory_floor_ms,
                all_reduce_ms,
                floor_ms,
                bound: if compute > memory_floor_ms { "compute" } else { "memory" },
                over_floor: ms / floor_ms,
            });
        }
    }
    Ok(runs)
}

fn mean(v: &[usize]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<usize>() as f64 / v.len() as f64
    }
}

/// Admit `batch` fresh requests of `len` random ids; on a refusal the ones admitted are cancelled.
fn admit<B: Runner>(engine: &mut Engine<B>, batch: usize, len: usize, params: &GenParams, rng: &mut Rng) -> Result<Vec<u64>> {
    let avoid = [engine.mask_id, engine.eos_id];
    let mut ids = vec![];
    for i in 0..batch {
        let p = random_prompt(rng, len, engine.cfg.vocab_size, &avoid);
        match engine.add(p, params.clone()) {
            Ok(id) => ids.push(id),
            Err(e) => {
                for id in ids {
                    engine.cancel(id);
                }
                return Err(e.context(format!("admitting request {} of {batch}", i + 1)));
            }
        }
    }
    Ok(ids)
}

fn failure(events: Vec<Event>) -> Option<String> {
    events.into_iter().find_map(|e| if let Event::Failed { error, .. } = e { Some(error) } else { None })
}

/// The first step, one forward at a time, reading the experts each routed to (the backend is
/// counting). Each forward's chunks come from the engine: its prefill forwards', then the
/// positions its step's own forward carries.
fn counted_first_step<B: Runner + Measure>(
    engine: &mut Engine<B>,
    batch: usize,
    len: usize,
    params: &GenParams,
    rng: &mut Rng,
) -> Result<Vec<Forward>> {
    let ids = admit(engine, batch, len, params, rng)?;
    let mut forwards = vec![];
    let mut events = vec![];
    let result = (|| {
        while let Some(carried) = engine.prefill_forward(&mut events) {
            if let Some(e) = failure(std::mem::take(&mut events)) {
                bail!(e);
            }
            let chunks = carried.into_iter().map(|(_, r)| (r.start, r.len())).collect();
            forwards.push(Forward { chunks, predicts: false, experts_touched: engine.backend.experts_touched() });
        }
        let chunks = engine.step_spans().into_iter().map(|(_, r)| (r.start, r.len())).collect();
        if let Some(e) = failure(engine.step()) {
            bail!(e);
        }
        forwards.push(Forward { chunks, predicts: true, experts_touched: engine.backend.experts_touched() });
        Ok(())
    })();
    for id in ids {
        engine.cancel(id);
    }
    result.map(|()| forwards)
}

/// Wall time of the first step of `batch` fresh requests, in ms.
fn timed_first_step<B: Runner>(engine: &mut Engine<B>, batch: usize, len: usize, params: &GenParams, rng: &mut Rng) -> Result<f64> {
    let ids = admit(engine, batch, len, params, rng)?;
    let t = Instant::now();
    let events = engine.step();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    for id in ids {
        engine.cancel(id);
    }
    match failure(events) {
        Some(e) => bail!(e),
        None => Ok(ms),
    }
}

pub fn print_prefill_table(device: &str, runs: &[PrefillRun]) {
    println!("device: {device}");
    if let Some(r) = runs.first() {
        println!(
            "routed experts: {}; block {}; first-block tokens: {}; forward budget {} tokens (prompts past it are prefilled in forwards of whole blocks)",
            r.experts_dtype,
            r.block,
            r.tokens.name(),
            r.chunked_prefill.map(|n| n.to_string()).unwrap_or_else(|| "unlimited".into())
        );
    }
    println!(
        "{:>7} {:>5} {:>8} {:>10} {:>11} {:>8} {:>9} {:>8} {:>9} {:>9} {:>9} {:>7} {:>8}",
        "prompt", "batch", "forwards", "ms", "tokens/s", "experts", "TFLOP", "GB", "flop_ms", "byte_ms", "floor_ms", "bound", "x_floor"
    );
    for r in runs {
        println!(
            "{:>7} {:>5} {:>8} {:>10.2} {:>11.0} {:>8.1} {:>9.3} {:>8.2} {:>9} {:>9.3} {:>9.3} {:>7} {:>8.2}",
            r.prompt_len,
            r.batch,
            r.forwards.len(),
            r.ms,
            r.tokens_per_s,
            r.experts_touched_per_layer,
            r.flops / 1e12,
            (r.weight_bytes + r.kv_bytes) / 1e9,
            r.compute_floor_ms.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into()),
            r.memory_floor_ms,
            r.floor_ms,
            r.bound,
            r.over_floor
        );
    }
    if let Some(r) = runs.first() {
        println!(
            "floor: max(matrix FLOPs / {} TFLOP/s bf16 GEMM, bytes / {:.0} GB/s copy), both measured in this run; experts: distinct routed experts per MoE layer, over every forward",
            r.gemm_tflops.map(|g| format!("{g:.0}")).unwrap_or_else(|| "- (no matrix units measured on this backend)".into()),
            r.bandwidth_gbps
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(chunks: Vec<(usize, usize)>, predicts: bool) -> Forward {
        Forward { chunks, predicts, experts_touched: vec![] }
    }

    #[test]
    fn a_step_forward_costs_the_matrix_flops_of_the_kernel_model() {
        // One step (each request's block after a cached prefix) is a predicting forward whose
        // rows are all predicted: its FLOPs are the matrix kernels' of bench kernels' model.
        let c = crate::config::preset("mini").unwrap();
        let matrix = ["qkv", "block_attention", "attention out", "router logits", "moe_gate_up", "moe_down"];
        let dense = ["mlp gate_up", "mlp down", "lm_head"];
        let work = crate::bench::kernels::step_work(
            &c,
            &[],
            crate::bench::kernels::StepDims::whole(4, 1024, 32),
            crate::bench::kernels::StepFusions::defaults(false),
        );
        let want: f64 = work.iter().filter(|k| matrix.contains(&k.name) || dense.contains(&k.name)).map(|k| k.flops).sum();
        let got = prefill_flops(&c, &[forward(vec![(1024, 32); 4], true)], 32);
        assert!((got / want - 1.0).abs() < 1e-12, "{got:e} vs {want:e}");
    }

    #[test]
    fn prefill_flops_do_not_depend_on_chunking() {
        let c = crate::config::preset("mini").unwrap();
        let whole = prefill_flops(&c, &[forward(vec![(0, 4096 + 32)], true)], 32);
        let chunked = [forward(vec![(0, 1024)], false), forward(vec![(1024, 3072)], false), forward(vec![(4096, 32)], true)];
        assert!((prefill_flops(&c, &chunked, 32) / whole - 1.0).abs() < 1e-12);
        // Mini, 4096 tokens: ~1.4 B active parameters a token (2 FLOPs each) and block-causal
        // attention over ~2048 keys on average, 20 layers.
        let tokens = 4128.0;
        let (h, im) = (2048.0, 512.0);
        let layer = 2.0 * h * (16.0 + 2.0 * 4.0) * 128.0 + 2.0 * 2048.0 * h + 2.0 * h * 256.0 + 9.0 * 2.0 * 3.0 * h * im;
        let approx = tokens * 19.0 * layer + tokens * 19.0 * 4.0 * 2048.0 * (tokens / 2.0);
        assert!((whole / approx - 1.0).abs() < 0.05, "{whole:e} vs {approx:e}");
        // Attention is block-causal: the first block attends to itself only.
        let one_block = prefill_flops(&c, &[forward(vec![(0, 32)], false)], 32);
        let two_blocks = prefill_flops(&c, &[forward(vec![(0, 64)], false)], 32);
        let attn = 4.0 * 16.0 * 128.0 * 19.0;
        assert!(((two_blocks - 2.0 * one_block) - attn * 32.0 * 32.0).abs() / two_blocks < 1e-12);
    }

    #[test]
    fn a_kv_only_forward_moves_fewer_bytes_than_a_step() {
        let c = crate::config::preset("mini").unwrap();
        let step = forward_bytes(&c, &[], &[(1024, 32)], true);
        let kv_only = forward_bytes(&c, &[], &[(1024, 32)], false);
        // No lm_head (157184 x 2048 bf16), no last layer past its QKV, no attention reads there.
        assert!(step.weights - kv_only.weights > 157184.0 * 2048.0 * 2.0);
        assert!(kv_only.kv < step.kv);
        assert_eq!(forward_bytes(&c, &[140; 19], &[(1024, 32); 4], true), crate::bench::step_bytes(&c, &[140; 19], 4, 1024, 32));
    }
}
