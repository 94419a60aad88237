//! Chunked prefill (`Engine::max_forward_tokens`) on the CPU backend: every forward stays
//! within the budget, the outputs are those of unchunked steps, and a failed prefill forward
//! fails only its own requests.

use anyhow::{bail, Result};
use dllm::backend::cpu::{CpuBackend, Mat};
use dllm::backend::{Backend, Head, Linear, Norm, StepBatch};
use dllm::checkpoint::Checkpoint;
use dllm::decode::Pick;
use dllm::decode::Policy;
use dllm::engine::{Engine, Event, GenParams, Output};
use dllm::rng::Rng;
use dllm::tokenizer::Tokenizer;
use std::collections::{BTreeSet, HashMap};

/// One forward as the backend saw it.
#[derive(Debug, Clone, PartialEq)]
struct Forward {
    tokens: usize,
    /// It reached the lm_head (a denoising step); prefill forwards do not.
    predicted: bool,
}

/// The CPU backend, recording each forward and the live KV slots, and failing one forward
/// on request (after its first layer has written K/V).
struct Recording {
    inner: CpuBackend,
    forwards: Vec<Forward>,
    live_slots: BTreeSet<usize>,
    fail_forward: Option<usize>,
}

impl Backend for Recording {
    type Act = Mat;
    fn name(&self) -> String {
        self.inner.name()
    }
    fn max_seq_len(&self) -> usize {
        self.inner.max_seq_len()
    }
    fn alloc_seq(&mut self, max_len: usize) -> Result<usize> {
        let slot = self.inner.alloc_seq(max_len)?;
        self.live_slots.insert(slot);
        Ok(slot)
    }
    fn free_seq(&mut self, slot: usize) {
        self.live_slots.remove(&slot);
        self.inner.free_seq(slot)
    }
    fn embed(&mut self, tokens: &[u32]) -> Result<Mat> {
        self.forwards.push(Forward { tokens: tokens.len(), predicted: false });
        self.inner.embed(tokens)
    }
    fn add_rms_norm(&mut self, x: &mut Mat, delta: Option<&Mat>, w: Norm) -> Result<Mat> {
        self.inner.add_rms_norm(x, delta, w)
    }
    fn linear(&mut self, x: &Mat, w: Linear) -> Result<Mat> {
        self.inner.linear(x, w)
    }
    fn qk_norm_rope_store(&mut self, qkv: &Mat, layer: usize, batch: &StepBatch) -> Result<Mat> {
        let forward = self.forwards.len() - 1;
        if layer == 1 && self.fail_forward == Some(forward) {
            bail!("injected failure in forward {forward}");
        }
        self.inner.qk_norm_rope_store(qkv, layer, batch)
    }
    fn attention(&mut self, q: &Mat, layer: usize, batch: &StepBatch) -> Result<Mat> {
        self.inner.attention(q, layer, batch)
    }
    fn ffn(&mut self, x: &Mat, layer: usize, batch: &StepBatch) -> Result<Mat> {
        self.inner.ffn(x, layer, batch)
    }
    fn all_reduce(&mut self, x: &mut Mat) -> Result<()> {
        self.inner.all_reduce(x)
    }
    fn gather_rows(&mut self, x: &Mat, rows: &[usize]) -> Result<Mat> {
        self.inner.gather_rows(x, rows)
    }
    fn head(&mut self, x: &Mat, head: Head) -> Result<()> {
        if let Some(f) = self.forwards.last_mut() {
            f.predicted = true;
        }
        self.inner.head(x, head)
    }
    fn set_draws(&mut self, draws: &[dllm::decode::sample::RowDraw]) -> anyhow::Result<()> {
        self.inner.set_draws(draws)
    }
    fn read_picks(&mut self) -> Result<Vec<Pick>> {
        self.inner.read_picks()
    }
    fn read_logits(&mut self) -> Result<Vec<f32>> {
        self.inner.read_logits()
    }
}

/// An engine over its own tiny checkpoint (tests run in parallel; see tests/bench.rs).
fn engine(tag: &str, budget: usize) -> Engine<Recording> {
    let dir = std::env::temp_dir().join(format!("dllm-chunked-{}-{tag}", std::process::id()));
    dllm::make_model::make_model("tiny", &dir, 0).unwrap();
    let ck = Checkpoint::open(&dir).unwrap();
    let tok = Tokenizer::open(&dir, &ck.config).unwrap();
    let backend = Recording { inner: CpuBackend::load(&ck).unwrap(), forwards: vec![], live_slots: BTreeSet::new(), fail_forward: None };
    let mut e = Engine::new(backend, ck.config.clone(), tok.mask_id, tok.eos_id);
    e.max_forward_tokens = budget;
    e
}

/// A prompt of random ids that are neither the mask nor the EOS token.
fn prompt(e: &Engine<Recording>, len: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let v = e.cfg.vocab_size as u64;
    let mut out = vec![];
    while out.len() < len {
        let t = (rng.next_u64() % v) as u32;
        if t != e.mask_id && t != e.eos_id {
            out.push(t);
        }
    }
    out
}

fn params(block_size: usize, max_new_tokens: usize, temperature: f32) -> GenParams {
    GenParams {
        block_size,
        max_new_tokens,
        temperature,
        seed: 7,
        policy: Policy::LowConfidence { threshold: 0.5 },
        ignore_eos: true,
        ..GenParams::default()
    }
}

/// The requests of the batch test: (prompt length, block size, max_new_tokens, temperature).
const REQUESTS: &[(usize, usize, usize, f32)] = &[(100, 8, 20, 0.0), (37, 4, 12, 0.0), (64, 16, 20, 0.0), (5, 8, 10, 0.0), (71, 4, 9, 0.8)];
/// Joins after the others' first step, so that its prefill meets requests mid-block.
const LATE: (usize, usize, usize, f32) = (90, 8, 16, 0.0);

/// Run REQUESTS (added at once) and LATE to the end; outputs by request index (LATE last).
fn run_batch(e: &mut Engine<Recording>) -> HashMap<usize, Output> {
    let mut ids = HashMap::new();
    for (i, &(len, b, n, t)) in REQUESTS.iter().enumerate() {
        let p = prompt(e, len, i as u64);
        ids.insert(e.add(p, params(b, n, t)).unwrap(), i);
    }
    let mut outputs = HashMap::new();
    let mut steps = 0;
    while e.active() > 0 {
        if steps == 1 {
            let (len, b, n, t) = LATE;
            let p = prompt(e, len, 99);
            ids.insert(e.add(p, params(b, n, t)).unwrap(), REQUESTS.len());
        }
        for ev in e.step() {
            match ev {
                Event::Done { id, output } => assert!(outputs.insert(ids[&id], output).is_none()),
                Event::Failed { id, error } => panic!("request {} failed: {error}", ids[&id]),
                Event::Block { .. } => {}
            }
        }
        steps += 1;
    }
    outputs
}

#[test]
fn chunked_requests_match_unchunked() {
    let mut whole = engine("whole", usize::MAX);
    let want = run_batch(&mut whole);
    assert_eq!(want.len(), REQUESTS.len() + 1);
    assert_eq!(whole.prefill_forwards, 0);
    assert!(whole.backend.forwards.iter().all(|f| f.predicted));
    let first = whole.backend.forwards[0].tokens;

    // The block sizes of all six requests sum to 48: every step fits once its context is cached.
    let budget = 48;
    let mut chunked = engine("chunked", budget);
    let got = run_batch(&mut chunked);
    assert!(first > 4 * budget, "the batch's first forward ({first} tokens) should be far over the budget");
    for (i, out) in &want {
        assert_eq!(got.get(i), Some(out), "request {i}");
    }
    let f = &chunked.backend.forwards;
    assert!(f.iter().all(|f| f.tokens <= budget), "a forward exceeds the budget: {f:?}");
    let prefills = f.iter().filter(|f| !f.predicted).count() as u64;
    assert!(prefills >= 10, "{prefills} prefill forwards");
    assert_eq!(prefills, chunked.prefill_forwards);
    // The same denoising steps ran, each in one forward.
    assert_eq!(f.len() - prefills as usize, whole.backend.forwards.len());
    assert!(chunked.backend.live_slots.is_empty());
}

#[test]
fn a_failed_prefill_fails_only_its_requests() {
    // Two 64-token prompts and a budget of 64: the first prefill forward holds all of the
    // first prompt and nothing of the second.
    let mut e = engine("fail", 64);
    let (pa, pb) = (prompt(&e, 64, 1), prompt(&e, 64, 2));
    let a = e.add(pa, params(8, 16, 0.0)).unwrap();
    let b = e.add(pb.clone(), params(8, 16, 0.0)).unwrap();
    e.backend.fail_forward = Some(0);
    let events = e.step();
    let failed: Vec<u64> = events.iter().filter_map(|ev| if let Event::Failed { id, .. } = ev { Some(*id) } else { None }).collect();
    assert_eq!(failed, vec![a]);
    match &events[0] {
        Event::Failed { error, .. } => assert!(error.contains("injected failure"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(e.active(), 1);
    assert_eq!(e.backend.live_slots.len(), 1, "the failed request's cache is freed");
    let mut out_b = None;
    while e.active() > 0 {
        for ev in e.step() {
            match ev {
                Event::Done { id, output } if id == b => out_b = Some(output),
                Event::Done { .. } | Event::Block { .. } => {}
                Event::Failed { id, error } => panic!("request {id} failed: {error}"),
            }
        }
    }
    assert!(e.backend.live_slots.is_empty());
    // The survivor's output is the one it gets alone and unchunked.
    let mut alone = engine("fail-alone", usize::MAX);
    let want = alone.generate(pb, params(8, 16, 0.0)).unwrap();
    assert_eq!(out_b, Some(want));
}
