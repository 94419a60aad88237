//! Random weights' routers balanced as LLaDA2's training balances them (`--balanced-router`).
//!
//! A trained LLaDA2 router spreads one 32-token block over ~150 of 256 experts a layer and
//! touches all 256 from batch 4 on: training moves each MoE layer's `expert_bias` until the
//! experts take even loads (the auxiliary-loss-free balancing LLaDA2 shares with DeepSeek-V3).
//! Random weights have had no training. Their tokens' hidden states share a component that sends
//! most tokens to the same few experts: at mini's router shape a block of 32 random ids routes to
//! ~80 experts a layer and the busiest expert takes about a third of all tokens (the benchmarks'
//! "experts/layer" since issue 13). So a step on random weights reads about half the experts a
//! trained model's does at batch 1.
//!
//! This does training's part on the host. Forward random prompts, recording each MoE layer's
//! biased scores; per layer, find the bias offsets under which those tokens' picks spread evenly
//! (training's update, load below the mean -> bias up, repeated over the recorded scores with a
//! shrinking step); add them to the layer's bias; again on fresh prompts, since each layer's
//! routing moves the inputs of the layers after it. A last forward on fresh prompts measures what
//! the balanced routers do with tokens they were not fitted on. Nothing else in the weights
//! changes, and the kernels route by the bias as they would by a trained one.

use super::random_prompt;
use crate::backend::cpu::select_experts;
use crate::backend::{LayerRouting, Measure, StepBatch};
use crate::config::ModelConfig;
use crate::engine::Runner;
use crate::rng::Rng;
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::HashSet;

/// Rows a calibration forward carries at least (at mini's shape 64 picks an expert on average).
const CALIBRATION_ROWS: usize = 2048;
/// Forwards that move the biases by default (`--balance-rounds`); one more measures the result.
pub const BALANCE_ROUNDS: usize = 2;
/// The update's passes over one forward's recorded scores, its first step (in score units:
/// sigmoid scores lie in (0, 1)) and the step's shrink a pass. The steps sum to about 1.
const BALANCE_PASSES: usize = 100;
const BALANCE_FIRST_STEP: f32 = 0.04;
const BALANCE_STEP_SHRINK: f32 = 0.96;

/// How evenly one forward's tokens spread over the experts, averaged over the MoE layers.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct RoutingSpread {
    /// Distinct experts a block of `block` consecutive rows of a prompt routes to.
    pub experts_per_block: f64,
    /// The busiest expert's picks over the mean picks an expert.
    pub busiest_over_mean: f64,
}

/// What balancing did: the spread of the random weights as drawn (the first calibration
/// forward) and after (a forward on fresh prompts).
#[derive(Debug, Clone, Serialize)]
pub struct RouterBalance {
    pub before: RoutingSpread,
    pub after: RoutingSpread,
    /// Rows each calibration forward carried, and the prompts' length.
    pub rows: usize,
    pub prompt_len: usize,
    pub block: usize,
}

/// Balance every MoE layer's router bias of `b` (random weights of `cfg`) over random prompts of
/// ids outside `avoid`, blocks of `block` rows, in `rounds` calibration forwards (at least 1).
pub fn balance_router<B: Runner + Measure>(
    b: &mut B,
    cfg: &ModelConfig,
    avoid: &[u32],
    block: usize,
    rounds: usize,
    seed: u64,
) -> Result<RouterBalance> {
    if cfg.block_routing().is_some() {
        bail!("--balanced-router balances per-token routing; LLaDA2.2's block routing picks from pools (not supported)");
    }
    if cfg.num_experts == 0 || block == 0 {
        bail!("--balanced-router needs a MoE model and a block size");
    }
    if rounds == 0 {
        bail!("--balance-rounds must be at least 1");
    }
    let prompt_len = (1024 + block).min(b.seq_capacity()).max(block);
    let prompts = CALIBRATION_ROWS.div_ceil(prompt_len);
    let mut rng = Rng::new(seed ^ 0x6261_6c61_6e63_6500);
    let mut forward = |b: &mut B| -> Result<Vec<LayerRouting>> {
        let routing = routed_forward(b, cfg, &mut rng, avoid, prompts, prompt_len, block)?;
        if routing.is_empty() {
            bail!("--balanced-router: the forward recorded no MoE layer's routing");
        }
        Ok(routing)
    };
    let mut before = None;
    for _ in 0..rounds {
        let routing = forward(b)?;
        before.get_or_insert_with(|| spread_of(&routing, cfg, prompt_len, block));
        // Each layer's offsets from its own recorded scores: independent, so in parallel.
        let offsets = std::thread::scope(|s| {
            let handles: Vec<_> = routing.iter().map(|r| s.spawn(|| balancing_offsets(&r.biased, cfg))).collect();
            handles.into_iter().map(|h| h.join()).collect::<std::result::Result<Vec<_>, _>>()
        })
        .map_err(|_| anyhow::anyhow!("--balanced-router: a balancing thread panicked"))?;
        for (r, d) in routing.iter().zip(offsets) {
            let bias: Vec<f32> = b.expert_bias(r.layer)?.iter().zip(&d).map(|(x, y)| x + y).collect();
            b.set_expert_bias(r.layer, &bias)?;
        }
    }
    let after = spread_of(&forward(b)?, cfg, prompt_len, block);
    Ok(RouterBalance { before: before.unwrap_or(after), after, rows: prompts * prompt_len, prompt_len, block })
}

/// One forward over `prompts` fresh prompts of `prompt_len` random ids (block-causal, blocks of
/// `block`, every row through every layer), its MoE layers' routing recorded.
fn routed_forward<B: Runner + Measure>(
    b: &mut B,
    cfg: &ModelConfig,
    rng: &mut Rng,
    avoid: &[u32],
    prompts: usize,
    prompt_len: usize,
    block: usize,
) -> Result<Vec<LayerRouting>> {
    let mut batch = StepBatch::default();
    let mut slots = vec![];
    let mut out = Ok(());
    for _ in 0..prompts {
        let tokens = random_prompt(rng, prompt_len, cfg.vocab_size, avoid);
        match b.open_seq(prompt_len) {
            Ok(slot) => {
                batch.push(slot, 0, &tokens, block);
                slots.push(slot);
            }
            Err(e) => {
                out = Err(e);
                break;
            }
        }
    }
    let mut routing = vec![];
    if out.is_ok() {
        b.record_routing(true);
        let rows: Vec<usize> = (0..prompts * prompt_len).collect();
        out = b.pick(cfg, &batch, &rows).map(drop);
        routing = b.routing();
        b.record_routing(false);
    }
    for slot in slots {
        b.close_seq(slot);
    }
    out.map(|_| routing)
}

/// The bias offsets under which `biased`'s rows (`[rows][E]`, sigmoid + bias) pick every expert
/// about equally often: training's sign-like update (load under the mean: up), repeated over
/// these scores with a shrinking step. The selection is the router's own ([`select_experts`]).
pub fn balancing_offsets(biased: &[Vec<f32>], cfg: &ModelConfig) -> Vec<f32> {
    let e = cfg.num_experts;
    let mean = (biased.len() * cfg.num_experts_per_tok) as f32 / e as f32;
    let mut d = vec![0f32; e];
    let mut row = vec![0f32; e];
    let mut step = BALANCE_FIRST_STEP;
    for _ in 0..BALANCE_PASSES {
        let mut load = vec![0f32; e];
        for scores in biased {
            for ((r, s), o) in row.iter_mut().zip(scores).zip(&d) {
                *r = s + o;
            }
            for x in select_experts(&row, cfg) {
                load[x] += 1.0;
            }
        }
        for (o, l) in d.iter_mut().zip(&load) {
            *o += step * ((mean - l) / mean).clamp(-1.0, 1.0);
        }
        step *= BALANCE_STEP_SHRINK;
    }
    d
}

/// The spread of one forward's picks (prompts of `prompt_len` rows in turn, blocks of `block`).
fn spread_of(routing: &[LayerRouting], cfg: &ModelConfig, prompt_len: usize, block: usize) -> RoutingSpread {
    let (mut per_block, mut busiest) = (0.0, 0.0);
    for r in routing {
        let blocks: Vec<usize> =
            r.picks.chunks(prompt_len).flat_map(|p| p.chunks(block).map(|b| b.iter().flatten().collect::<HashSet<_>>().len())).collect();
        per_block += blocks.iter().sum::<usize>() as f64 / blocks.len().max(1) as f64;
        let mut load = vec![0usize; cfg.num_experts];
        for &x in r.picks.iter().flatten() {
            load[x] += 1;
        }
        let mean = (r.picks.len() * cfg.num_experts_per_tok) as f64 / cfg.num_experts as f64;
        busiest += load.iter().copied().max().unwrap_or(0) as f64 / mean.max(1e-9);
    }
    let n = routing.len().max(1) as f64;
    RoutingSpread { experts_per_block: per_block / n, busiest_over_mean: busiest / n }
}
