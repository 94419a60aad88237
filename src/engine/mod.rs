//! Request state machine (prompt prefill -> blocks of denoising steps -> finished) and the
//! batch: one `step` advances the current block of every active request by one denoising step.

mod params;
mod prefill;
mod runner;

pub use params::{GenParams, MAX_BLOCK_SIZE};
pub use prefill::{forward_budget, plan_prefill, Chunk, ChunkState, DEFAULT_CHUNKED_PREFILL};
pub use runner::Runner;

use crate::backend::{GraphSteps, Measure, StepBatch};
use crate::config::ModelConfig;
use crate::decode::blocks::{quota_schedule, BlockLayout};
use crate::decode::joint_threshold_indel::{EditIds, InDelState, TopRows};
use crate::decode::output::{after_block, stop_ids};
use crate::decode::row_top::RowTop;
use crate::decode::sample::{apply_penalties, pick_row, sample_row, History, RowDraw, SKIPPED};
use crate::decode::{BlockProgress, Pick, Policy};
use crate::rng::Rng;
use anyhow::{bail, Result};
use std::ops::Range;

#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Ended on a stop token (the token id).
    Stop(u32),
    Length,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub output_ids: Vec<u32>,
    /// Per output token: the probability it had at the step that unmasked it (its pick's).
    pub output_probs: Vec<f32>,
    pub finish: Finish,
    pub prompt_tokens: usize,
    /// Denoising forwards this request took part in.
    pub steps: usize,
    pub blocks: usize,
}

/// Tokens generated so far, each with the probability it had when it was unmasked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generated {
    pub ids: Vec<u32>,
    pub probs: Vec<f32>,
}

#[derive(Debug)]
pub enum Event {
    /// A block finished; `generated` is everything generated so far (cut as the output would be).
    Block {
        id: u64,
        generated: Generated,
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
    /// Per position of `tokens`: the probability of the pick that unmasked it (0 for the prompt).
    probs: Vec<f32>,
    layout: BlockLayout,
    params: GenParams,
    quotas: Vec<usize>,
    slot: usize,
    block: usize,
    /// The current block's steps so far.
    progress: BlockProgress,
    /// JointThresholdInDel's state of the current block (from its first step).
    indel: Option<InDelState>,
    /// Positions below this have their final K/V in the cache.
    cached: usize,
    steps: usize,
    blocks_done: usize,
    rng: Rng,
}

pub struct Engine<B: Runner> {
    /// One backend, or a tensor-parallel group of them.
    pub backend: B,
    pub cfg: ModelConfig,
    pub mask_id: u32,
    pub eos_id: u32,
    /// The mask and edit tokens JointThresholdInDel writes, or why this checkpoint has none.
    pub edit_ids: Result<EditIds, String>,
    /// Longest sequence (prompt + generated, block-rounded) a request may reach: at most the
    /// config's max_position_embeddings and what the backend's KV cache holds for one sequence.
    pub context_len: usize,
    /// Most tokens one forward may carry (usize::MAX: no limit): a step over more first runs
    /// prefill-only forwards over whole context blocks. A forward's scratch memory grows with it.
    pub max_forward_tokens: usize,
    /// Prefill-only forwards run so far (chunked prefill at work).
    pub prefill_forwards: u64,
    /// Benchmarks only (`dllm bench --tokens random`); always `None` in real decoding. See
    /// [`RandomFill`].
    pub mask_fill: Option<RandomFill>,
    /// Output rows the last step's forward predicted (benchmarks count its lm_head by them).
    pub predicted_rows: usize,
    /// [`Runner::summarizes`], asked once: a capability, which tensor-parallel ranks answer by a
    /// round trip to every rank (a step reading logits rows would otherwise ask each time).
    summarizes: bool,
    reqs: Vec<Req>,
    next_id: u64,
}

impl<B: Runner> Engine<B> {
    pub fn new(backend: B, cfg: ModelConfig, mask_id: u32, eos_id: u32) -> Self {
        let context_len = cfg.max_position_embeddings.min(backend.seq_capacity());
        let edit_ids = EditIds::new(mask_id, cfg.delete_token_id, cfg.split_token_id, cfg.vocab_size);
        let summarizes = backend.summarizes();
        Engine {
            edit_ids,
            backend,
            cfg,
            mask_id,
            eos_id,
            context_len,
            max_forward_tokens: DEFAULT_CHUNKED_PREFILL,
            prefill_forwards: 0,
            mask_fill: None,
            predicted_rows: 0,
            summarizes,
            reqs: vec![],
            next_id: 1,
        }
    }

    pub fn active(&self) -> usize {
        self.reqs.len()
    }

    /// Request `id`'s tokens as its last step left them: the prompt, the finished blocks and the
    /// current one (masks where nothing is decoded yet); `None` once it has finished or failed.
    /// Tests follow a decoder's blocks step by step through it (the events carry finished blocks
    /// only, cut as the output).
    pub fn tokens(&self, id: u64) -> Option<&[u32]> {
        self.reqs.iter().find(|r| r.id == id).map(|r| r.tokens.as_slice())
    }

    /// Check a request before it is queued: every error here is the caller's.
    pub fn validate(&self, prompt: &[u32], p: &GenParams) -> Result<BlockLayout> {
        if prompt.is_empty() {
            bail!("the prompt is empty");
        }
        p.validate(self.cfg.vocab_size).map_err(anyhow::Error::msg)?;
        if let (Policy::JointThresholdInDel(_), Err(e)) = (&p.policy, &self.edit_ids) {
            bail!("{e}");
        }
        if let Some(&t) = prompt.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            bail!("token id {t} is outside the vocabulary ({})", self.cfg.vocab_size);
        }
        if let Some(br) = self.cfg.block_routing() {
            if p.block_size != br.block {
                // Each forward routes its tokens per routing block; a decode block of another size
                // would split routing blocks across forwards (or merge them), computing another
                // model than the one the reference decodes without a cache.
                bail!(
                    "this model routes its experts per block of {} tokens (config.json block_size): the decode block size must be {}, got {}",
                    br.block,
                    br.block,
                    p.block_size
                );
            }
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
        let slot = self.backend.open_seq(layout.total_len())?;
        let id = self.next_id;
        self.next_id += 1;
        let quotas = quota_schedule(params.block_size, params.steps.unwrap_or(params.block_size));
        self.reqs.push(Req {
            id,
            probs: vec![0.0; prompt.len()],
            tokens: prompt,
            layout,
            rng: Rng::new(params.seed),
            quotas,
            params,
            slot,
            block: layout.first_gen_block(),
            progress: BlockProgress::default(),
            indel: None,
            cached: 0,
            steps: 0,
            blocks_done: 0,
        });
        Ok(id)
    }

    pub fn cancel(&mut self, id: u64) -> bool {
        if let Some(i) = self.reqs.iter().position(|r| r.id == id) {
            let r = self.reqs.swap_remove(i);
            self.backend.close_seq(r.slot);
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
        // The prefill-only forwards first, outside the "step" range (each forward has its own
        // "prefill" range, model.rs): a profile of "step" ranges (tools/profile.sh ncu) then holds
        // denoising forwards only, where a first step's 8,192-token prefill chunks took all of
        // its launches (session 47).
        let mut events = self.prefill_chunks();
        if self.reqs.is_empty() {
            return events;
        }
        let _r = crate::nvtx::range("step");
        let mut batch = StepBatch::default();
        let mut out_rows = Vec::new();
        for r in &mut self.reqs {
            let b = r.layout.block_size;
            let (bs, be) = (r.block * b, (r.block + 1) * b);
            if r.tokens.len() < be {
                r.tokens.resize(be, self.mask_id);
                r.probs.resize(be, 0.0);
            }
            let row0 = batch.num_tokens();
            match &mut self.mask_fill {
                None => batch.push(r.slot, r.cached, &r.tokens[r.cached..be], b),
                Some(fill) => batch.push(r.slot, r.cached, &fill.fill(&r.tokens[r.cached..be], bs - r.cached, self.mask_id), b),
            }
            out_rows.extend(row0 + (bs - r.cached)..row0 + (be - r.cached));
        }
        let (picks, mut rows) = match self.picks(&batch, &out_rows) {
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
        let mut failed: Vec<(u64, String)> = vec![];
        let mut off = 0;
        for (ri, r) in self.reqs.iter_mut().enumerate() {
            let b = r.layout.block_size;
            let bs = r.block * b;
            let picks = &picks[off..off + b];
            off += b;
            let fixed = r.layout.prompt_len.saturating_sub(bs).min(b);
            let open = match (r.params.policy, rows.get_mut(ri).and_then(Option::take), &self.edit_ids) {
                (Policy::JointThresholdInDel(a), Some(rows), Ok(ids)) => {
                    // The step may rewrite the whole block (deletes shift it left, splits right,
                    // masks pad it): it returns the block's new tokens and their probabilities.
                    let block = &r.tokens[bs..bs + b];
                    let state = r.indel.get_or_insert_with(|| InDelState::start(block, fixed, ids.mask));
                    let probs = &r.probs[bs..bs + b];
                    let s = match rows {
                        BlockRows::Full(logits) => a.step(state, block, probs, &logits, *ids),
                        BlockRows::Top { tops, first } => {
                            // A row the summary cannot answer for is read whole from the backend,
                            // which keeps this step's rows until the next forward.
                            let backend = &mut self.backend;
                            let fetch = |i: usize| backend.logit_rows(&[first + i]).map_err(|e| format!("{e:#}"));
                            match a.step_rows(state, block, probs, &mut TopRows::new(&tops, fetch), *ids) {
                                Ok(s) => s,
                                Err(e) => {
                                    failed.push((r.id, e));
                                    continue;
                                }
                            }
                        }
                    };
                    r.tokens[bs..bs + b].copy_from_slice(&s.tokens);
                    r.probs[bs..bs + b].copy_from_slice(&s.probs);
                    r.progress.steps += 1;
                    s.open && r.progress.steps < a.max_steps(b)
                }
                (Policy::JointThresholdInDel(_), ..) => {
                    // add() checked the ids and picks() keeps the rows of every such request.
                    failed.push((r.id, "internal error: a JointThresholdInDel step without its logits rows or edit ids".to_string()));
                    continue;
                }
                (policy, ..) => {
                    let step = policy.step_block(&mut r.progress, &r.quotas, picks, &r.tokens[bs..bs + b], fixed, self.mask_id);
                    for i in step.writes {
                        r.tokens[bs + i] = picks[i].token;
                        r.probs[bs + i] = picks[i].prob;
                    }
                    step.open
                }
            };
            // The block's K/V in the cache is from this step's forward, over the tokens before
            // this step's writes; the next block's first step runs this block again with its final
            // tokens (from `cached`), so a finished block's cached K/V is always its final one
            // (also when a step rewrote the block's layout: the whole block is forwarded again).
            r.cached = bs;
            r.steps += 1;
            if open {
                continue;
            }
            r.blocks_done += 1;
            let p = &r.params;
            let stops = stop_ids(&p.stop_token_ids, self.eos_id, p.replace_eos, p.ignore_eos);
            let generated = &r.tokens[r.layout.prompt_len..bs + b];
            let (cut, matched, done) = after_block(generated, r.params.max_new_tokens, &stops, r.params.min_new_tokens, self.mask_id);
            let last = r.block + 1 >= r.layout.end_block();
            let p0 = r.layout.prompt_len;
            let probs = r.probs[p0..p0 + cut.len()].to_vec();
            events.push(Event::Block { id: r.id, generated: Generated { ids: cut.clone(), probs: probs.clone() } });
            if done || last {
                let output = Output {
                    finish: matched.map(Finish::Stop).unwrap_or(Finish::Length),
                    output_ids: cut,
                    output_probs: probs,
                    prompt_tokens: r.layout.prompt_len,
                    steps: r.steps,
                    blocks: r.blocks_done,
                };
                events.push(Event::Done { id: r.id, output });
                finished.push(ri);
            } else {
                r.block += 1;
                r.progress = BlockProgress::default();
                r.indel = None;
            }
        }
        for &ri in finished.iter().rev() {
            let r = self.reqs.remove(ri);
            self.backend.close_seq(r.slot);
        }
        for (id, error) in failed {
            self.fail(&[id], &error, &mut events);
        }
        events
    }

    /// The positions each request puts in the next step's own forward, after any prefill
    /// forwards: its context not yet cached and its block (benchmarks count the work from it).
    pub fn step_spans(&self) -> Vec<(u64, Range<usize>)> {
        self.reqs.iter().map(|r| (r.id, r.cached..(r.block + 1) * r.layout.block_size)).collect()
    }

    /// Drop the requests (freeing their caches) and report each as failed.
    fn fail(&mut self, ids: &[u64], error: &str, events: &mut Vec<Event>) {
        for &id in ids {
            self.cancel(id);
            events.push(Event::Failed { id, error: error.to_string() });
        }
    }

    /// Per output row: when no request needs the logits on the host (greedy, no bias or
    /// penalty) the backend's fused lm_head pick; when one reads its rows (JointThresholdInDel)
    /// and all are greedy with no bias or penalty, the rows' summaries (the argmax and its
    /// probability read from them); otherwise the full logits, each request's rows shifted by
    /// its bias and penalties, then its argmax or draw. Second, per request, its block's
    /// (shifted) logits rows or their summaries where its algorithm reads them.
    fn picks(&mut self, batch: &StepBatch, out_rows: &[usize]) -> Result<(Vec<Pick>, Vec<Option<BlockRows>>)> {
        let n = self.reqs.len();
        let none = || (0..n).map(|_| None).collect::<Vec<_>>();
        self.predicted_rows = out_rows.len();
        if !self.reqs.iter().any(|r| r.params.needs_logits()) {
            let read = self.read_positions();
            let rows = predicted(out_rows, &read);
            self.predicted_rows = rows.len();
            return Ok((spread(self.backend.pick(&self.cfg, batch, &rows)?, &read)?, none()));
        }
        let reads_rows = self.reqs.iter().any(|r| r.params.reads_rows());
        if reads_rows && self.summarizes && self.reqs.iter().all(|r| r.params.temperature == 0.0 && r.params.penalties().is_neutral()) {
            return self.summary_picks(batch, out_rows);
        }
        if !reads_rows && self.backend.samples() && self.reqs.iter().all(|r| r.params.penalties().is_neutral()) {
            // Sampled without penalties: each row drawn where its logits are, with the uniform
            // the host path would draw for it (same generator, same order). A row whose pick the
            // request's algorithm cannot read (a position no longer masked) is not predicted:
            // its uniform is still drawn, so every other row's draw stays the same.
            let read = self.read_positions();
            let mut draws = Vec::with_capacity(out_rows.len());
            let mut at = read.iter();
            for r in &mut self.reqs {
                let sampling = (r.params.temperature > 0.0).then(|| r.params.sampling());
                for _ in 0..r.layout.block_size {
                    let u = if sampling.is_some() { r.rng.uniform() } else { 0.0 };
                    if at.next() == Some(&true) {
                        draws.push(RowDraw { sampling, u, skip: false });
                    }
                }
            }
            let rows = predicted(out_rows, &read);
            self.predicted_rows = rows.len();
            return Ok((spread(self.backend.sample(&self.cfg, batch, &rows, &draws)?, &read)?, none()));
        }
        let mut logits = self.backend.logits(&self.cfg, batch, out_rows)?;
        let v = self.cfg.vocab_size;
        let mut picks = Vec::with_capacity(out_rows.len());
        let mut rows = Vec::with_capacity(self.reqs.len());
        let mut row = 0;
        for r in &mut self.reqs {
            let first = row;
            let b = r.layout.block_size;
            let penalties = r.params.penalties();
            // "So far" is what is unmasked at this step: the prompt, and the output positions
            // up to the end of the current block that are no longer masks (docs/MODEL.md).
            let history = if penalties.reads_history() {
                let p0 = r.layout.prompt_len;
                let end = ((r.block + 1) * b).min(r.tokens.len());
                History::new(&r.tokens[..p0], &r.tokens[p0.min(end)..end], self.mask_id)
            } else {
                History::default()
            };
            for _ in 0..b {
                let l = &mut logits[row * v..(row + 1) * v];
                if !penalties.is_neutral() {
                    apply_penalties(l, &penalties, &history);
                }
                picks.push(if r.params.temperature == 0.0 { pick_row(l) } else { sample_row(l, &r.params.sampling(), &mut r.rng) });
                row += 1;
            }
            rows.push(r.params.reads_rows().then(|| BlockRows::Full(logits[first * v..row * v].to_vec())));
        }
        Ok((picks, rows))
    }

    /// Per block position of the step (requests in order): whether its request's algorithm
    /// reads its pick. LowConfidence and FixedCount read masked positions only, so the others'
    /// rows are not predicted (no lm_head, no pick), which at two tokens a step halves the
    /// lm_head of a block on average. A step that reads none still predicts its first row (its
    /// forward runs anyway: it writes the blocks' K/V), whose pick no algorithm then reads.
    fn read_positions(&self) -> Vec<bool> {
        let mut read = Vec::new();
        for r in &self.reqs {
            let b = r.layout.block_size;
            let every = r.params.policy.reads_unmasked_picks();
            read.extend(r.tokens[r.block * b..(r.block + 1) * b].iter().map(|&t| every || t == self.mask_id));
        }
        if let (false, Some(first)) = (read.contains(&true), read.first_mut()) {
            *first = true;
        }
        read
    }

    /// [`Engine::picks`] for a greedy batch with no bias or penalty: a few numbers a row cross
    /// from the backend, not its logits. A row's pick is its summary's first entry with
    /// probability 1 / z (pick_row's, to the bit on the CPU); a row the summary does not speak
    /// for (a NaN or an infinity in it) is read whole and picked from.
    fn summary_picks(&mut self, batch: &StepBatch, out_rows: &[usize]) -> Result<(Vec<Pick>, Vec<Option<BlockRows>>)> {
        let tops = self.backend.tops(&self.cfg, batch, out_rows)?;
        if tops.len() != out_rows.len() {
            bail!("the backend summarized {} logits rows for {} output rows", tops.len(), out_rows.len());
        }
        let odd: Vec<usize> = (0..tops.len()).filter(|&i| !tops[i].usable()).collect();
        let whole = if odd.is_empty() { vec![] } else { self.backend.logit_rows(&odd)? };
        // The odd rows come back in row order, as the loop meets them.
        let mut odd_rows = whole.chunks_exact(self.cfg.vocab_size.max(1));
        let mut picks = Vec::with_capacity(tops.len());
        for t in &tops {
            picks.push(match t.top.first() {
                Some(&(token, _)) if t.usable() => Pick { token, prob: 1.0 / t.sum_exp },
                _ => match odd_rows.next() {
                    Some(row) => pick_row(row),
                    None => bail!("the backend read back {} floats for {} whole logits rows", whole.len(), odd.len()),
                },
            });
        }
        let mut rows = Vec::with_capacity(self.reqs.len());
        let mut first = 0;
        for r in &self.reqs {
            let b = r.layout.block_size;
            rows.push(r.params.reads_rows().then(|| BlockRows::Top { tops: tops[first..first + b].to_vec(), first }));
            first += b;
        }
        Ok((picks, rows))
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

/// The output rows of the positions read (`read[i]` for `out_rows[i]`).
fn predicted(out_rows: &[usize], read: &[bool]) -> Vec<usize> {
    out_rows.iter().zip(read).filter(|(_, &r)| r).map(|(&row, _)| row).collect()
}

/// Every position's pick from the picks of [`predicted`]'s rows: the read positions' in order,
/// [`SKIPPED`] at the others.
fn spread(picks: Vec<Pick>, read: &[bool]) -> Result<Vec<Pick>> {
    let wanted = read.iter().filter(|&&r| r).count();
    if picks.len() != wanted {
        bail!("the backend made {} picks for {wanted} predicted rows", picks.len());
    }
    let mut made = picks.into_iter();
    Ok(read.iter().map(|&r| if r { made.next().unwrap_or(SKIPPED) } else { SKIPPED }).collect())
}

/// One request's block of logits rows, where its algorithm reads them (JointThresholdInDel).
enum BlockRows {
    /// The rows, `block_size * vocab` (shifted by the request's bias and penalties).
    Full(Vec<f32>),
    /// Their summaries; `first` is the block's first output row, for reading a row whole.
    Top { tops: Vec<RowTop>, first: usize },
}

/// Benchmarks only: what a step's forward carries at the masked positions of each request's
/// block instead of the mask id: random ids (never one of `avoid`), drawn afresh for every
/// forward. With random weights every mask shares one embedding, so a block of masks routes to
/// a handful of experts where a trained router spreads it over most of them; random ids route
/// like text does, and the forward costs what it costs with masks (its shape is the same).
/// Only the forward's input changes: the requests keep their masks, so which positions a step
/// unmasks and how many steps a block takes stay as they are (the picks come from the forward
/// over random ids, so the tokens they unmask differ).
#[derive(Clone)]
pub struct RandomFill {
    rng: Rng,
    vocab: usize,
    avoid: Vec<u32>,
}

impl RandomFill {
    /// Ids below `vocab`, none of `avoid` (which must leave at least one id).
    pub fn new(seed: u64, vocab: usize, avoid: &[u32]) -> Result<Self> {
        let mut avoided: Vec<u32> = avoid.iter().copied().filter(|&t| (t as usize) < vocab).collect();
        avoided.sort_unstable();
        avoided.dedup();
        if vocab > u32::MAX as usize || avoided.len() >= vocab {
            bail!("no token id to draw: vocabulary {vocab}, {} avoided", avoid.len());
        }
        Ok(RandomFill { rng: Rng::new(seed), vocab, avoid: avoid.to_vec() })
    }

    /// One random id.
    pub fn draw(&mut self) -> u32 {
        loop {
            let t = (self.rng.next_u64() % self.vocab as u64) as u32;
            if !self.avoid.contains(&t) {
                return t;
            }
        }
    }

    /// `tokens` with every `mask_id` from `from` on replaced by a random id.
    fn fill(&mut self, tokens: &[u32], from: usize, mask_id: u32) -> Vec<u32> {
        let mut out = tokens.to_vec();
        for t in &mut out[from..] {
            if *t == mask_id {
                *t = self.draw();
            }
        }
        out
    }
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
    /// The checkpoint's mask and edit tokens (JointThresholdInDel), or why it has none.
    fn edit_ids(&self) -> Result<EditIds, String>;
    /// The backend's CUDA graphs of the step so far (None: it records none).
    fn graph_steps(&self) -> Option<GraphSteps>;
}

impl<B: Runner + Measure + Send> DynEngine for Engine<B> {
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
        self.backend.label()
    }
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn context_len(&self) -> usize {
        self.context_len
    }
    fn set_context_len(&mut self, n: usize) {
        self.context_len = n.min(self.cfg.max_position_embeddings).min(self.backend.seq_capacity());
    }
    fn max_forward_tokens(&self) -> usize {
        self.max_forward_tokens
    }
    fn set_max_forward_tokens(&mut self, n: usize) {
        self.max_forward_tokens = n;
    }
    fn edit_ids(&self) -> Result<EditIds, String> {
        self.edit_ids.clone()
    }
    fn graph_steps(&self) -> Option<GraphSteps> {
        self.backend.graph_steps()
    }
}
