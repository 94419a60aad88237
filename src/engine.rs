//! Request state machine (prompt prefill -> blocks of denoising steps -> finished) and the
//! batch: one `step` advances the current block of every active request by one denoising step.

use crate::backend::{Backend, Pick, StepBatch};
use crate::config::ModelConfig;
use crate::decode::blocks::{quota_schedule, BlockLayout};
use crate::decode::policy;
use crate::model;
use crate::rng::Rng;
use anyhow::{bail, Result};

/// Default token budget of one forward (SGLang's `--chunked-prefill-size`): a step whose
/// forward would carry more first prefills whole prompt blocks in forwards of at most this many.
pub const DEFAULT_CHUNKED_PREFILL: usize = 8192;

/// The forward budget for SGLang's `--chunked-prefill-size N`: N <= 0 (SGLang: -1) disables chunking.
pub fn forward_budget(chunked_prefill_size: i64) -> usize {
    usize::try_from(chunked_prefill_size).ok().filter(|&n| n > 0).unwrap_or(usize::MAX)
}

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
    Block {
        id: u64,
        generated: Vec<u32>,
    },
    Done {
        id: u64,
        output: Output,
    },
    Failed {
        id: u64,
        error: String,
    },
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
    /// Most tokens one forward may carry (usize::MAX: no limit): a step over more first runs
    /// prefill-only forwards over whole context blocks. A forward's scratch memory grows with it.
    pub max_forward_tokens: usize,
    /// Prefill-only forwards run so far (chunked prefill at work).
    pub prefill_forwards: u64,
    reqs: Vec<Req>,
    next_id: u64,
}

impl<B: Backend> Engine<B> {
    pub fn new(backend: B, cfg: ModelConfig, mask_id: u32, eos_id: u32) -> Self {
        let context_len = cfg.max_position_embeddings;
        Engine {
            backend,
            cfg,
            mask_id,
            eos_id,
            context_len,
            max_forward_tokens: DEFAULT_CHUNKED_PREFILL,
            prefill_forwards: 0,
            reqs: vec![],
            next_id: 1,
        }
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
        let mut events = self.prefill_chunks();
        if self.reqs.is_empty() {
            return events;
        }
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
                self.fail(&ids, &msg, &mut events);
                return events;
            }
        };
        let mut finished = vec![];
        let mut off = 0;
        for (ri, r) in self.reqs.iter_mut().enumerate() {
            let b = r.layout.block_size;
            let bs = r.block * b;
            let picks = &picks[off..off + b];
            off += b;
            let masked: Vec<bool> = r.tokens[bs..bs + b].iter().map(|&t| t == self.mask_id).collect();
            let chosen = match r.params.policy {
                Policy::LowConfidence { threshold } => policy::low_confidence(picks, &masked, r.quotas[r.step_in_block], threshold),
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

    /// While the step's forward would carry more than `max_forward_tokens`, run prefill-only
    /// forwards over whole blocks of cached-to-be context (the prompt's, or a just finished
    /// block's), each within the budget. A chunk starts at `cached` (block-aligned) and ends on a
    /// block boundary, so every token attends to the cache and to its own block exactly as it
    /// would in the step's forward. Returns the events of requests whose prefill failed.
    fn prefill_chunks(&mut self) -> Vec<Event> {
        let mut events = vec![];
        loop {
            let states: Vec<ChunkState> = self.reqs.iter().map(Req::chunk_state).collect();
            let plan = plan_prefill(&states, self.max_forward_tokens);
            if plan.is_empty() {
                return events;
            }
            let mut batch = StepBatch::default();
            for c in &plan {
                let r = &self.reqs[c.req];
                batch.push(r.slot, r.cached, &r.tokens[r.cached..r.cached + c.len], r.layout.block_size);
            }
            self.prefill_forwards += 1;
            match model::forward_prefill(&mut self.backend, &self.cfg, &batch) {
                Ok(()) => {
                    for c in &plan {
                        self.reqs[c.req].cached += c.len;
                    }
                }
                Err(e) => {
                    // Only this forward's requests fail; the others go on.
                    let ids: Vec<u64> = plan.iter().map(|c| self.reqs[c.req].id).collect();
                    self.fail(&ids, &format!("{e:#}"), &mut events);
                }
            }
        }
    }

    /// Drop the requests (freeing their caches) and report each as failed.
    fn fail(&mut self, ids: &[u64], error: &str, events: &mut Vec<Event>) {
        for &id in ids {
            self.cancel(id);
            events.push(Event::Failed { id, error: error.to_string() });
        }
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

impl Req {
    fn chunk_state(&self) -> ChunkState {
        ChunkState { cached: self.cached, block: self.block, block_size: self.layout.block_size }
    }
}

/// What the chunk planner needs of a request. `cached` is block-aligned (a multiple of
/// `block_size`) and at most `block * block_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkState {
    pub cached: usize,
    /// The block being denoised; the blocks before it are context.
    pub block: usize,
    pub block_size: usize,
}

impl ChunkState {
    /// Tokens this request puts in the step's forward: the uncached context and its block.
    pub fn step_tokens(&self) -> usize {
        ((self.block + 1) * self.block_size).saturating_sub(self.cached)
    }
    /// Context tokens not yet in the cache: whole blocks that a prefill may take.
    pub fn uncached_context(&self) -> usize {
        (self.block * self.block_size).saturating_sub(self.cached)
    }
}

/// One request's part of a prefill forward: `len` tokens from its `cached` position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Index into the planner's input.
    pub req: usize,
    pub len: usize,
}

/// The next prefill-only forward: empty when the step's forward fits `budget` or nothing fits
/// (every uncached block is larger than the budget left). Chunks are whole blocks of uncached
/// context, in request order, filling the forward up to `budget` tokens.
pub fn plan_prefill(reqs: &[ChunkState], budget: usize) -> Vec<Chunk> {
    let step_total = reqs.iter().fold(0usize, |t, r| t.saturating_add(r.step_tokens()));
    if step_total <= budget {
        return vec![];
    }
    let mut left = budget;
    let mut plan = vec![];
    for (req, r) in reqs.iter().enumerate() {
        if r.block_size == 0 {
            continue;
        }
        let len = r.uncached_context().min(left / r.block_size * r.block_size);
        if len > 0 {
            plan.push(Chunk { req, len });
            left -= len;
        }
    }
    plan
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
    fn max_forward_tokens(&self) -> usize;
    fn set_max_forward_tokens(&mut self, n: usize);
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
    fn max_forward_tokens(&self) -> usize {
        self.max_forward_tokens
    }
    fn set_max_forward_tokens(&mut self, n: usize) {
        self.max_forward_tokens = n;
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

    fn state(cached_blocks: usize, block: usize, block_size: usize) -> ChunkState {
        ChunkState { cached: cached_blocks * block_size, block, block_size }
    }

    /// Plan and apply prefill forwards as `Engine::step` does; returns each forward's plan.
    fn drive(states: &mut [ChunkState], budget: usize) -> Vec<Vec<Chunk>> {
        let mut forwards = vec![];
        loop {
            let plan = plan_prefill(states, budget);
            if plan.is_empty() {
                return forwards;
            }
            for c in &plan {
                states[c.req].cached += c.len;
            }
            forwards.push(plan);
            assert!(forwards.len() < 10_000, "the planner makes no progress");
        }
    }

    #[test]
    fn chunk_plans_take_whole_context_blocks_within_the_budget() {
        let mut rng = Rng::new(11);
        let mut below = |n: u64| (rng.next_u64() % n) as usize;
        let mut chunked = 0;
        for _ in 0..3000 {
            let n = 1 + below(6);
            let start: Vec<ChunkState> = (0..n)
                .map(|_| {
                    let block_size = [1, 2, 4, 8, 16, 32][below(6)];
                    let block = below(20);
                    state(below(block as u64 + 1), block, block_size)
                })
                .collect();
            let budget = 1 + below(200);
            let mut s = start.clone();
            let forwards = drive(&mut s, budget);
            chunked += usize::from(!forwards.is_empty());
            let mut replay = start.clone();
            for plan in &forwards {
                assert!(plan.iter().map(|c| c.len).sum::<usize>() <= budget, "{plan:?} over {budget}");
                let mut reqs: Vec<usize> = plan.iter().map(|c| c.req).collect();
                reqs.sort_unstable();
                reqs.dedup();
                assert_eq!(reqs.len(), plan.len(), "a request twice in one forward: {plan:?}");
                for c in plan {
                    let r = &mut replay[c.req];
                    assert!(c.len > 0 && c.len % r.block_size == 0, "{c:?} is not whole blocks of {}", r.block_size);
                    assert!(r.cached + c.len <= r.block * r.block_size, "{c:?} reaches into block {} of {r:?}", r.block);
                    r.cached += c.len;
                }
            }
            assert_eq!(replay, s);
            // It stops once the step fits, or when no uncached block fits the budget.
            let step: usize = s.iter().map(ChunkState::step_tokens).sum();
            assert!(
                step <= budget || s.iter().all(|r| r.uncached_context() == 0 || r.block_size > budget),
                "stopped at {step} tokens over {budget}: {s:?}"
            );
            // A step that fit from the start runs no prefill.
            if start.iter().map(ChunkState::step_tokens).sum::<usize>() <= budget {
                assert!(forwards.is_empty());
            }
        }
        assert!(chunked > 1000, "only {chunked} cases chunked anything");
    }

    #[test]
    fn chunk_plans_for_known_batches() {
        // 64 new requests with 1024-token prompts in blocks of 32: eight forwards of eight
        // whole prompts, then a step of 64 blocks.
        let mut s = vec![state(0, 32, 32); 64];
        let forwards = drive(&mut s, DEFAULT_CHUNKED_PREFILL);
        assert_eq!(forwards.len(), 8);
        for (i, plan) in forwards.iter().enumerate() {
            let want: Vec<Chunk> = (8 * i..8 * i + 8).map(|req| Chunk { req, len: 1024 }).collect();
            assert_eq!(plan, &want);
        }
        assert_eq!(s.iter().map(ChunkState::step_tokens).sum::<usize>(), 64 * 32);
        // A prompt split: three blocks fit in 100 tokens, then the step (two blocks) fits.
        let mut s = vec![state(0, 5, 32)];
        assert_eq!(drive(&mut s, 100), vec![vec![Chunk { req: 0, len: 96 }]]);
        assert_eq!(s[0].step_tokens(), 96);
        // A request already cached is skipped; the budget left after one chunk goes to the next.
        let mut s = vec![state(3, 3, 8), state(0, 4, 8), state(1, 6, 4)];
        assert_eq!(plan_prefill(&s, 40), vec![Chunk { req: 1, len: 32 }, Chunk { req: 2, len: 8 }]);
        assert_eq!(drive(&mut s, 40).len(), 1);
        assert_eq!(s.iter().map(ChunkState::step_tokens).sum::<usize>(), 8 + 8 + 16);
        // A budget below one block: nothing can be chunked, the step runs as it is.
        assert!(plan_prefill(&[state(0, 4, 32)], 31).is_empty());
        // The step fits: nothing to do.
        assert!(plan_prefill(&[state(0, 4, 32)], 160).is_empty());
    }

    #[test]
    fn chunked_prefill_size_follows_sglang() {
        assert_eq!(forward_budget(-1), usize::MAX);
        assert_eq!(forward_budget(0), usize::MAX);
        assert_eq!(forward_budget(512), 512);
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
