//! Request state machine (prompt prefill -> blocks of denoising steps -> finished) and the
//! batch: one `step` advances the current block of every active request by one denoising step.

use crate::backend::{Backend, Pick, StepBatch};
use crate::config::ModelConfig;
use crate::decode::blocks::{quota_schedule, BlockLayout};
use crate::decode::policy;
use crate::make_model::Rng;
use crate::model;
use anyhow::{bail, Result};

/// How a step decides which masks become final.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// All masked positions with p > threshold, else the step's quota of the most confident.
    LowConfidence { threshold: f32 },
    /// Exactly k per step (benchmarks on random weights).
    FixedCount { k: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenParams {
    pub max_new_tokens: usize,
    pub block_size: usize,
    /// Denoising steps per block at most (None: the block size).
    pub steps: Option<usize>,
    pub policy: Policy,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub seed: u64,
    /// Tokens that end generation besides the model's EOS (or instead of it, see `replace_eos`).
    pub stop_token_ids: Vec<u32>,
    /// Use only `stop_token_ids`, not the model's EOS.
    pub replace_eos: bool,
    pub ignore_eos: bool,
    /// Stop tokens among the first `min_new_tokens` generated ones do not end generation.
    pub min_new_tokens: usize,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams {
            max_new_tokens: 128,
            block_size: 32,
            steps: None,
            policy: Policy::LowConfidence { threshold: 0.95 },
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            stop_token_ids: vec![],
            replace_eos: false,
            ignore_eos: false,
            min_new_tokens: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Ended on a stop token (the token id).
    Stop(u32),
    Length,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub output_ids: Vec<u32>,
    pub finish: Finish,
    pub prompt_tokens: usize,
    /// Denoising forwards this request took part in.
    pub steps: usize,
    pub blocks: usize,
}

#[derive(Debug)]
pub enum Event {
    /// A block finished; `generated` is everything generated so far (cut as the output would be).
    Block { id: u64, generated: Vec<u32> },
    Done { id: u64, output: Output },
    Failed { id: u64, error: String },
}

struct Req {
    id: u64,
    tokens: Vec<u32>,
    layout: BlockLayout,
    params: GenParams,
    quotas: Vec<usize>,
    slot: usize,
    block: usize,
    step_in_block: usize,
    /// Positions below this have their final K/V in the cache.
    cached: usize,
    steps: usize,
    blocks_done: usize,
    rng: Rng,
}

pub struct Engine<B: Backend> {
    pub backend: B,
    pub cfg: ModelConfig,
    pub mask_id: u32,
    pub eos_id: u32,
    /// Longest sequence (prompt + generated, block-rounded) a request may reach.
    pub context_len: usize,
    reqs: Vec<Req>,
    next_id: u64,
}

impl<B: Backend> Engine<B> {
    pub fn new(backend: B, cfg: ModelConfig, mask_id: u32, eos_id: u32) -> Self {
        let context_len = cfg.max_position_embeddings;
        Engine { backend, cfg, mask_id, eos_id, context_len, reqs: vec![], next_id: 1, }
    }

    pub fn active(&self) -> usize {
        self.reqs.len()
    }

    /// Check a request before it is queued: every error here is the caller's.
    pub fn validate(&self, prompt: &[u32], p: &GenParams) -> Result<BlockLayout> {
        if prompt.is_empty() {
            bail!("the prompt is empty");
        }
        if p.block_size == 0 || p.block_size > 4096 {
            bail!("block size must be between 1 and 4096, got {}", p.block_size);
        }
        if p.max_new_tokens == 0 {
            bail!("max_new_tokens must be at least 1");
        }
        if p.min_new_tokens > p.max_new_tokens {
            bail!("min_new_tokens ({}) exceeds max_new_tokens ({})", p.min_new_tokens, p.max_new_tokens);
        }
        if let Some(&t) = prompt.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            bail!("token id {t} is outside the vocabulary ({})", self.cfg.vocab_size);
        }
        if !(p.temperature >= 0.0 && p.temperature.is_finite()) {
            bail!("temperature must be a finite number >= 0");
        }
        if !(p.top_p > 0.0 && p.top_p <= 1.0) {
            bail!("top_p must be in (0, 1]");
        }
        let layout = BlockLayout { prompt_len: prompt.len(), block_size: p.block_size, max_new_tokens: p.max_new_tokens };
        if prompt.len().saturating_add(p.max_new_tokens) > self.context_len || layout.total_len() > self.context_len {
            bail!(
                "prompt ({} tokens) + max_new_tokens ({}), rounded up to whole blocks of {} ({} positions), exceeds the context length {}",
                prompt.len(),
                p.max_new_tokens,
                p.block_size,
                layout.total_len(),
                self.context_len
            );
        }
        Ok(layout)
    }

    pub fn add(&mut self, prompt: Vec<u32>, params: GenParams) -> Result<u64> {
        let layout = self.validate(&prompt, &params)?;
        let slot = self.backend.alloc_seq(layout.total_len())?;
        let id = self.next_id;
        self.next_id += 1;
        let quotas = quota_schedule(params.block_size, params.steps.unwrap_or(params.block_size));
        self.reqs.push(Req {
            id,
            tokens: prompt,
            layout,
            rng: Rng::new(params.seed),
            quotas,
            params,
            slot,
            block: layout.first_gen_block(),
            step_in_block: 0,
            cached: 0,
            steps: 0,
            blocks_done: 0,
        });
        Ok(id)
    }

    pub fn cancel(&mut self, id: u64) -> bool {
        if let Some(i) = self.reqs.iter().position(|r| r.id == id) {
            let r = self.reqs.swap_remove(i);
            self.backend.free_seq(r.slot);
            true
        } else {
            false
        }
    }

    /// One denoising step over the current block of every active request.
    pub fn step(&mut self) -> Vec<Event> {
        if self.reqs.is_empty() {
            return vec![];
        }
        let _r = crate::nvtx::range("step");
        let mut batch = StepBatch::default();
        let mut out_rows = Vec::new();
        for r in &mut self.reqs {
            let b = r.layout.block_size;
            let (bs, be) = (r.block * b, (r.block + 1) * b);
            if r.tokens.len() < be {
                r.tokens.resize(be, self.mask_id);
            }
            let row0 = batch.num_tokens();
            batch.push(r.slot, r.cached, &r.tokens[r.cached..be], b);
            out_rows.extend(row0 + (bs - r.cached)..row0 + (be - r.cached));
        }
        let picks = match self.picks(&batch, &out_rows) {
            Ok(p) => p,
            Err(e) => {
                // A failed forward fails its requests, never the engine.
                let msg = format!("{e:#}");
                let ids: Vec<u64> = self.reqs.iter().map(|r| r.id).collect();
                for id in &ids {
                    self.cancel(*id);
                }
                return ids.into_iter().map(|id| Event::Failed { id, error: msg.clone() }).collect();
            }
        };
        let mut events = vec![];
        let mut finished = vec![];
        let mut off = 0;
        for (ri, r) in self.reqs.iter_mut().enumerate() {
            let b = r.layout.block_size;
            let bs = r.block * b;
            let picks = &picks[off..off + b];
            off += b;
            let masked: Vec<bool> = r.tokens[bs..bs + b].iter().map(|&t| t == self.mask_id).collect();
            let chosen = match r.params.policy {
                Policy::LowConfidence { threshold } => {
                    policy::low_confidence(picks, &masked, r.quotas[r.step_in_block], threshold)
                }
                Policy::FixedCount { k } => policy::fixed_count(picks, &masked, k),
            };
            for i in chosen {
                r.tokens[bs + i] = picks[i].token;
            }
            r.cached = bs;
            r.steps += 1;
            r.step_in_block += 1;
            let block_open = r.tokens[bs..bs + b].contains(&self.mask_id) && r.step_in_block < r.quotas.len();
            if block_open {
                continue;
            }
            r.blocks_done += 1;
            let stops = stop_ids(&r.params, self.eos_id);
            let generated = &r.tokens[r.layout.prompt_len..bs + b];
            let (cut, matched) = cut_output_min(generated, r.params.max_new_tokens, &stops, r.params.min_new_tokens);
            let eos_final = matched.is_some() && !generated[..cut.len()].contains(&self.mask_id);
            let last = r.block + 1 >= r.layout.end_block();
            events.push(Event::Block { id: r.id, generated: cut.clone() });
            if eos_final || last || generated.len() >= r.params.max_new_tokens {
                let output = Output {
                    finish: matched.map(Finish::Stop).unwrap_or(Finish::Length),
                    output_ids: cut,
                    prompt_tokens: r.layout.prompt_len,
                    steps: r.steps,
                    blocks: r.blocks_done,
                };
                events.push(Event::Done { id: r.id, output });
                finished.push(ri);
            } else {
                r.block += 1;
                r.step_in_block = 0;
            }
        }
        for &ri in finished.iter().rev() {
            let r = self.reqs.remove(ri);
            self.backend.free_seq(r.slot);
        }
        events
    }

    /// Per output row: greedy rows through the fused lm_head pick, sampled rows from logits.
    fn picks(&mut self, batch: &StepBatch, out_rows: &[usize]) -> Result<Vec<Pick>> {
        if self.reqs.iter().all(|r| r.params.temperature == 0.0) {
            return model::forward_pick(&mut self.backend, &self.cfg, batch, out_rows);
        }
        let logits = model::forward_logits(&mut self.backend, &self.cfg, batch, out_rows)?;
        let v = self.cfg.vocab_size;
        let mut picks = Vec::with_capacity(out_rows.len());
        let mut row = 0;
        for r in &mut self.reqs {
            for _ in 0..r.layout.block_size {
                let l = &logits[row * v..(row + 1) * v];
                picks.push(if r.params.temperature == 0.0 {
                    crate::backend::cpu::pick_row(l)
                } else {
                    sample_row(l, &r.params, &mut r.rng)
                });
                row += 1;
            }
        }
        Ok(picks)
    }

    /// Run one request alone to the end (the CLI path).
    pub fn generate(&mut self, prompt: Vec<u32>, params: GenParams) -> Result<Output> {
        let id = self.add(prompt, params)?;
        loop {
            for ev in self.step() {
                match ev {
                    Event::Done { id: i, output } if i == id => return Ok(output),
                    Event::Failed { id: i, error } if i == id => bail!(error),
                    _ => {}
                }
            }
        }
    }
}

fn stop_ids(p: &GenParams, eos: u32) -> Vec<u32> {
    let mut s = p.stop_token_ids.clone();
    if !p.replace_eos && !p.ignore_eos {
        s.push(eos);
    }
    s
}

/// Object-safe face of [`Engine`], so callers choose the backend at run time.
pub trait DynEngine: Send {
    fn validate(&self, prompt: &[u32], p: &GenParams) -> Result<()>;
    fn add(&mut self, prompt: Vec<u32>, params: GenParams) -> Result<u64>;
    fn step(&mut self) -> Vec<Event>;
    fn cancel(&mut self, id: u64) -> bool;
    fn active(&self) -> usize;
    fn generate(&mut self, prompt: Vec<u32>, params: GenParams) -> Result<Output>;
    fn backend_name(&self) -> String;
    fn config(&self) -> &ModelConfig;
    fn context_len(&self) -> usize;
    fn set_context_len(&mut self, n: usize);
}

impl<B: Backend + Send> DynEngine for Engine<B> {
    fn validate(&self, prompt: &[u32], p: &GenParams) -> Result<()> {
        Engine::validate(self, prompt, p).map(|_| ())
    }
    fn add(&mut self, prompt: Vec<u32>, params: GenParams) -> Result<u64> {
        Engine::add(self, prompt, params)
    }
    fn step(&mut self) -> Vec<Event> {
        Engine::step(self)
    }
    fn cancel(&mut self, id: u64) -> bool {
        Engine::cancel(self, id)
    }
    fn active(&self) -> usize {
        Engine::active(self)
    }
    fn generate(&mut self, prompt: Vec<u32>, params: GenParams) -> Result<Output> {
        Engine::generate(self, prompt, params)
    }
    fn backend_name(&self) -> String {
        self.backend.name()
    }
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn context_len(&self) -> usize {
        self.context_len
    }
    fn set_context_len(&mut self, n: usize) {
        self.context_len = n.min(self.cfg.max_position_embeddings);
    }
}

/// Cut generated tokens at max_new, then just after the first stop token (kept).
pub fn cut_output(generated: &[u32], max_new: usize, stops: &[u32]) -> (Vec<u32>, Option<u32>) {
    cut_output_min(generated, max_new, stops, 0)
}

/// [`cut_output`], where stop tokens among the first `min_new` are ordinary tokens.
pub fn cut_output_min(generated: &[u32], max_new: usize, stops: &[u32], min_new: usize) -> (Vec<u32>, Option<u32>) {
    let g = &generated[..generated.len().min(max_new)];
    match g.iter().enumerate().skip(min_new).find(|(_, t)| stops.contains(t)) {
        Some((i, _)) => (g[..=i].to_vec(), Some(g[i])),
        None => (g.to_vec(), None),
    }
}

/// Temperature, top-k and top-p, then a draw; the confidence is the drawn token's probability
/// under the filtered distribution. O(vocab) unless top-p needs the kept tokens in order
/// (a full sort of a 157k vocabulary per position would cost milliseconds per step).
pub fn sample_row(logits: &[f32], p: &GenParams, rng: &mut Rng) -> Pick {
    let by_logit = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if p.top_k > 0 && p.top_k < idx.len() {
        idx.select_nth_unstable_by(p.top_k - 1, by_logit);
        idx.truncate(p.top_k);
    }
    let inv_t = 1.0 / p.temperature;
    let m = idx.iter().map(|&i| logits[i]).fold(f32::NEG_INFINITY, f32::max);
    // One exp per candidate, indexed by token id.
    let mut w = vec![0f32; logits.len()];
    let mut z = 0f64;
    for &i in &idx {
        w[i] = ((logits[i] - m) * inv_t).exp();
        z += w[i] as f64;
    }
    if p.top_p < 1.0 {
        // The nucleus is a prefix of the tokens in logit order. Sort only the best few
        // (select first); a flat distribution whose nucleus is wider falls back to a full sort.
        let need = p.top_p as f64 * z;
        let mut head = 1024.min(idx.len());
        loop {
            if head < idx.len() {
                idx.select_nth_unstable_by(head - 1, by_logit);
            }
            idx[..head].sort_by(by_logit);
            let mut acc = 0.0;
            if let Some(k) = idx[..head].iter().position(|&i| {
                acc += w[i] as f64;
                acc >= need
            }) {
                idx.truncate(k + 1);
                break;
            }
            if head == idx.len() {
                break;
            }
            head = idx.len();
        }
        z = idx.iter().map(|&i| w[i] as f64).sum();
    }
    let probs: Vec<f64> = idx.iter().map(|&i| w[i] as f64 / z).collect();
    let u = rng.uniform();
    let mut acc = 0.0;
    for (k, &pr) in probs.iter().enumerate() {
        acc += pr;
        if u < acc || k + 1 == probs.len() {
            return Pick { token: idx[k] as u32, prob: pr as f32 };
        }
    }
    unreachable!("probabilities are non-empty")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> GenParams {
        GenParams { temperature, top_k, top_p, ..GenParams::default() }
    }

    #[test]
    fn sampling_follows_the_softmax() {
        let logits = [1.0f32, 0.0, 2.0, -1.0];
        let p = params(1.0, 0, 1.0);
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let mut rng = Rng::new(3);
        let mut counts = [0usize; 4];
        let n = 40_000;
        for _ in 0..n {
            let pick = sample_row(&logits, &p, &mut rng);
            counts[pick.token as usize] += 1;
            let want = (logits[pick.token as usize] as f64).exp() / z;
            assert!((pick.prob as f64 - want).abs() < 1e-6);
        }
        for (t, &c) in counts.iter().enumerate() {
            let want = (logits[t] as f64).exp() / z;
            assert!((c as f64 / n as f64 - want).abs() < 0.01, "token {t}: {} vs {want}", c as f64 / n as f64);
        }
    }

    #[test]
    fn top_k_and_top_p_filter() {
        let logits = [0.5f32, 3.0, 2.9, -2.0, 1.0];
        let mut rng = Rng::new(5);
        for _ in 0..200 {
            let k1 = sample_row(&logits, &params(0.7, 1, 1.0), &mut rng);
            assert_eq!((k1.token, k1.prob), (1, 1.0));
            let k2 = sample_row(&logits, &params(1.0, 2, 1.0), &mut rng);
            assert!(k2.token == 1 || k2.token == 2);
            // Token 1 alone holds 0.47 of the mass: top_p 0.3 keeps only it.
            let p = sample_row(&logits, &params(1.0, 0, 0.3), &mut rng);
            assert_eq!((p.token, p.prob), (1, 1.0));
        }
    }
}
