//! Random batches of random requests through the engine on the CPU backend, seeded: every
//! decoding algorithm, block sizes from 1, step counts, sampling knobs, penalties, stop tokens
//! (drawn from the request's own output, or lifted by a logit bias), min_new_tokens, chunked
//! prefill budgets and cancellations. Each case checks what a request's output promises whatever the weights say:
//! one end event a request, the cut at max_new_tokens and after the first stop token past
//! min_new_tokens, finish reasons that agree with the tokens, block events that only grow, the
//! step counts the block schedule allows; and that the outputs replay exactly, alone or in
//! any batch (each request draws from its own seed).

use dllm::backend::cpu::CpuBackend;
use dllm::checkpoint::Checkpoint;
use dllm::config::Family;
use dllm::decode::joint_threshold::JointThreshold;
use dllm::decode::joint_threshold_indel::JointThresholdInDel;
use dllm::decode::Policy;
use dllm::engine::{Engine, Event, Finish, GenParams, Output};
use dllm::make_model::Plan;
use dllm::rng::Rng;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

struct Model {
    ck: Checkpoint,
    mask_id: u32,
    eos_id: u32,
    /// LLaDA2.2's routing block: the only decode block size it takes.
    routing_block: Option<usize>,
}

fn model(family: Family) -> &'static Model {
    static MODELS: OnceLock<HashMap<&'static str, Model>> = OnceLock::new();
    let models = MODELS.get_or_init(|| {
        let mut m = HashMap::new();
        for (name, family) in [("2.0", Family::Llada20), ("2.2", Family::Llada22)] {
            let dir: PathBuf = std::env::temp_dir().join(format!("dllm-engine-sweep-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Plan::for_family("tiny", family, 3, None).unwrap().write(&dir).unwrap();
            let ck = Checkpoint::open(&dir).unwrap();
            let tok = dllm::tokenizer::Tokenizer::open(&dir, &ck.config).unwrap();
            let routing_block = ck.config.block_routing().map(|b| b.block);
            m.insert(name, Model { mask_id: tok.mask_id, eos_id: tok.eos_id, routing_block, ck });
        }
        m
    });
    &models[if family == Family::Llada22 { "2.2" } else { "2.0" }]
}

fn engine(m: &Model, budget: usize) -> Engine<CpuBackend> {
    let mut e = Engine::new(CpuBackend::load(&m.ck).unwrap(), m.ck.config.clone(), m.mask_id, m.eos_id);
    e.max_forward_tokens = budget;
    e
}

/// A request: its prompt and parameters, and the step after which it is cancelled (if any).
#[derive(Clone, Debug)]
struct Req {
    prompt: Vec<u32>,
    params: GenParams,
    cancel_after: Option<usize>,
    /// A stop token is to be drawn from what the request outputs without one.
    stop_from_output: bool,
}

fn draw_request(rng: &mut Rng, m: &Model, family: Family) -> Req {
    let vocab = m.ck.config.vocab_size;
    let special = |t: u32| t == m.mask_id || t == m.eos_id;
    let token = |rng: &mut Rng| loop {
        let t = rng.below(vocab) as u32;
        if !special(t) {
            return t;
        }
    };
    let prompt_len = *rng.pick(&[1, 2, 5, 31, 32, 33, 70]);
    let prompt: Vec<u32> = (0..prompt_len).map(|_| token(rng)).collect();
    let block_size = m.routing_block.unwrap_or_else(|| *rng.pick(&[1, 2, 3, 4, 7, 8, 16, 32]));
    let max_new_tokens = *rng.pick(&[1, 2, 3, 9, 16, 33, 48]);
    let min_new_tokens = if rng.below(3) == 0 { rng.below(max_new_tokens + 1) } else { 0 };
    let policy = match (family, rng.below(4)) {
        (Family::Llada22, 0 | 1) => Policy::JointThresholdInDel(JointThresholdInDel {
            threshold: *rng.pick(&[0.0, 0.5, 0.95, 1.0]),
            edit_threshold: *rng.pick(&[0.0, 0.5, 0.9, 1.0]),
            max_post_edit_steps: *rng.pick(&[0, 1, 3]),
        }),
        (_, 0) => Policy::JointThreshold(JointThreshold {
            threshold: *rng.pick(&[0.0, 0.5, 0.95, 1.0]),
            edit_threshold: *rng.pick(&[0.0, 0.5, 0.9, 1.0]),
            max_post_edit_steps: *rng.pick(&[0, 1, 3]),
        }),
        (_, 1) => Policy::FixedCount { k: *rng.pick(&[1, 2, 5]) },
        _ => Policy::LowConfidence { threshold: *rng.pick(&[0.0, 0.3, 0.95, 1.0]) },
    };
    let steps = match policy {
        Policy::LowConfidence { .. } | Policy::FixedCount { .. } if rng.below(2) == 0 => Some(1 + rng.below(block_size)),
        _ => None,
    };
    let greedy_only = matches!(policy, Policy::JointThresholdInDel(_));
    let temperature = if greedy_only { 0.0 } else { *rng.pick(&[0.0, 0.0, 0.7, 1.5]) };
    // Random weights favour a few tokens by wide margins, so a stop token is either one the
    // request produces without it (`case` fills those in from a run without stops) or lifted by
    // a bias large enough to win some or all positions.
    let mut stop_token_ids = vec![];
    let mut logit_bias = vec![];
    let stop_from_output = rng.below(3) == 0;
    if !stop_from_output && rng.below(2) == 0 {
        let stop = token(rng);
        stop_token_ids.push(stop);
        logit_bias.push((stop, *rng.pick(&[3.0, 20.0, 100.0])));
    }
    if rng.below(4) == 0 {
        logit_bias.push((m.eos_id, *rng.pick(&[4.0, 50.0])));
    }
    let params = GenParams {
        max_new_tokens,
        block_size,
        steps,
        policy,
        temperature,
        top_p: *rng.pick(&[1.0, 0.9, 0.3]),
        top_k: *rng.pick(&[0, 0, 1, 5]),
        min_p: *rng.pick(&[0.0, 0.0, 0.1]),
        logit_bias,
        repetition_penalty: *rng.pick(&[1.0, 1.0, 1.3, 0.7]),
        presence_penalty: *rng.pick(&[0.0, 0.0, 0.5, -1.0]),
        frequency_penalty: *rng.pick(&[0.0, 0.0, 0.5]),
        seed: rng.below(1000) as u64,
        stop_token_ids,
        replace_eos: rng.below(5) == 0,
        ignore_eos: rng.below(5) == 0,
        min_new_tokens,
    };
    let cancel_after = (rng.below(6) == 0).then(|| rng.below(6));
    Req { prompt, params, cancel_after, stop_from_output }
}

/// What one request saw: its block events' outputs and its end (None: cancelled first).
#[derive(Debug, Default, Clone, PartialEq)]
struct Seen {
    blocks: Vec<Vec<u32>>,
    end: Option<Result<Output, String>>,
}

/// Run `reqs` together on a fresh engine: what each request saw (in `reqs`' order).
fn run(m: &Model, reqs: &[Req], budget: usize) -> Vec<Seen> {
    let mut e = engine(m, budget);
    let ids: Vec<u64> = reqs.iter().map(|r| e.add(r.prompt.clone(), r.params.clone()).expect("a valid request")).collect();
    let mut seen = vec![Seen::default(); reqs.len()];
    let index: HashMap<u64, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut cancelled = vec![false; reqs.len()];
    for step in 0.. {
        assert!(step < 100_000, "the engine did not finish its requests");
        for (i, r) in reqs.iter().enumerate() {
            if r.cancel_after == Some(step) && seen[i].end.is_none() && !cancelled[i] {
                assert!(e.cancel(ids[i]), "request {i} was running and could not be cancelled");
                cancelled[i] = true;
            }
        }
        if e.active() == 0 {
            break;
        }
        for ev in e.step() {
            let id = match &ev {
                Event::Block { id, .. } | Event::Done { id, .. } | Event::Failed { id, .. } => *id,
            };
            let i = index[&id];
            assert!(!cancelled[i], "request {i} had an event after it was cancelled");
            assert!(seen[i].end.is_none(), "request {i} had an event after its end");
            match ev {
                Event::Block { generated, .. } => seen[i].blocks.push(generated.ids),
                Event::Done { output, .. } => seen[i].end = Some(Ok(output)),
                Event::Failed { error, .. } => seen[i].end = Some(Err(error)),
            }
        }
    }
    for (i, s) in seen.iter().enumerate() {
        assert!(cancelled[i] || s.end.is_some(), "request {i} never ended");
    }
    seen
}

/// What every output promises, whatever the model predicts.
fn check(m: &Model, r: &Req, s: &Seen) -> Result<(), String> {
    let Some(end) = &s.end else { return Ok(()) };
    let out = end.as_ref().map_err(|e| format!("a valid request failed: {e}"))?;
    let p = &r.params;
    let stops = dllm::decode::output::stop_ids(&p.stop_token_ids, m.eos_id, p.replace_eos, p.ignore_eos);
    let n = out.output_ids.len();
    let indel = matches!(p.policy, Policy::JointThresholdInDel(_));
    if n == 0 || n > p.max_new_tokens {
        return Err(format!("{n} output tokens for max_new_tokens {}", p.max_new_tokens));
    }
    if out.output_probs.len() != n || out.output_probs.iter().any(|q| !(0.0..=1.0).contains(q)) {
        return Err(format!("output_probs {:?} for {n} tokens", out.output_probs));
    }
    if out.prompt_tokens != r.prompt.len() {
        return Err(format!("prompt_tokens {} for a prompt of {}", out.prompt_tokens, r.prompt.len()));
    }
    let first_stop = out.output_ids.iter().enumerate().skip(p.min_new_tokens).find(|(_, t)| stops.contains(t)).map(|(i, _)| i);
    match out.finish {
        Finish::Stop(t) => {
            if !stops.contains(&t) || out.output_ids.last() != Some(&t) || first_stop != Some(n - 1) {
                return Err(format!("finish Stop({t}) with stops {stops:?}, min_new {}: {:?}", p.min_new_tokens, out.output_ids));
            }
        }
        Finish::Length => {
            if let Some(i) = first_stop {
                return Err(format!("finish Length with the stop token {} at {i} (min_new {})", out.output_ids[i], p.min_new_tokens));
            }
            if !indel && n != p.max_new_tokens {
                return Err(format!("finish Length after {n} of max_new_tokens {}", p.max_new_tokens));
            }
        }
    }
    if out.blocks != s.blocks.len() {
        return Err(format!("blocks {} but {} block events", out.blocks, s.blocks.len()));
    }
    // A finished block is never decoded again (LLaDA2.2's edits too change only the current
    // block): each block event starts with the one before, and the output with the last.
    let mut all = s.blocks.clone();
    all.push(out.output_ids.clone());
    for w in all.windows(2) {
        if !w[1].starts_with(&w[0]) {
            return Err(format!("a later block event rewrote earlier output: {:?} then {:?}", w[0], w[1]));
        }
    }
    let block_steps = match p.policy {
        Policy::LowConfidence { .. } | Policy::FixedCount { .. } => Some(p.steps.unwrap_or(p.block_size)),
        _ => None,
    };
    if let Some(per_block) = block_steps {
        if out.steps > out.blocks * per_block {
            return Err(format!("{} steps over {} blocks of at most {per_block}", out.steps, out.blocks));
        }
    }
    if out.steps < out.blocks {
        return Err(format!("{} steps for {} blocks", out.steps, out.blocks));
    }
    Ok(())
}

/// One seeded case: a batch of 1-4 requests on one family's model under a drawn prefill budget,
/// each output checked, then each request run again alone and unchunked and compared.
fn case(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let family = if rng.below(3) == 0 { Family::Llada22 } else { Family::Llada20 };
    let m = model(family);
    let n = 1 + rng.below(4);
    let mut reqs: Vec<Req> = (0..n).map(|_| draw_request(&mut rng, m, family)).collect();
    for r in reqs.iter_mut().filter(|r| r.stop_from_output) {
        let probe = Req { cancel_after: None, ..r.clone() };
        if let Some(Ok(out)) = &run(m, &[probe], usize::MAX)[0].end {
            r.params.stop_token_ids.push(*rng.pick(&out.output_ids));
        }
    }
    let budget = *rng.pick(&[usize::MAX, 8192, 64, 32]);
    let seen = run(m, &reqs, budget);
    for (i, (r, s)) in reqs.iter().zip(&seen).enumerate() {
        check(m, r, s).map_err(|e| format!("request {i} of {n} ({:?}): {e}", r.params))?;
    }
    // Alone, uncancelled requests end as they did in the batch: a request's tokens and draws
    // depend on its own prompt, parameters and seed only.
    for (i, (r, s)) in reqs.iter().zip(&seen).enumerate() {
        if r.cancel_after.is_some() && s.end.is_none() {
            continue;
        }
        let alone = run(m, &[Req { cancel_after: None, ..r.clone() }], usize::MAX);
        if alone[0] != *s {
            return Err(format!(
                "request {i} of {n} ({:?}) ended otherwise in the batch than alone:\n  batch {s:?}\n  alone {:?}",
                r.params, alone[0]
            ));
        }
    }
    Ok(())
}

/// Cases a run draws (seeds 0..CASES).
const CASES: u64 = 60;

#[test]
fn random_requests_keep_every_output_promise_alone_or_batched() {
    let mut failures = vec![];
    for seed in 0..CASES {
        if let Err(e) = case(seed) {
            failures.push(format!("case {seed}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{} of {CASES} cases failed:\n{}", failures.len(), failures.join("\n"));
}
