//! Chunked prefill (SGLang's `--chunked-prefill-size`): when a step's forward would carry more
//! tokens than the budget, prompt blocks are first prefilled in forwards of whole blocks.

use super::Runner;
use super::{Engine, Event, Req};
use crate::backend::StepBatch;
use std::ops::Range;

/// Default token budget of one forward (SGLang's `--chunked-prefill-size`): a step whose
/// forward would carry more first prefills whole prompt blocks in forwards of at most this many.
pub const DEFAULT_CHUNKED_PREFILL: usize = 8192;

/// The forward budget for SGLang's `--chunked-prefill-size N`: N <= 0 (SGLang: -1) disables chunking.
pub fn forward_budget(chunked_prefill_size: i64) -> usize {
    usize::try_from(chunked_prefill_size).ok().filter(|&n| n > 0).unwrap_or(usize::MAX)
}

impl<B: Runner> Engine<B> {
    /// While the step's forward would carry more than `max_forward_tokens`, run prefill-only
    /// forwards over whole blocks of cached-to-be context (the prompt's, or a just finished
    /// block's), each within the budget. A chunk starts at `cached` (block-aligned) and ends on a
    /// block boundary, so every token attends to the cache and to its own block exactly as it
    /// would in the step's forward. Returns the events of requests whose prefill failed.
    pub(super) fn prefill_chunks(&mut self) -> Vec<Event> {
        let mut events = vec![];
        while self.prefill_forward(&mut events).is_some() {}
        events
    }

    /// The next prefill-only forward [`Engine::step`] would run before its own forward, run
    /// now: `None` when the step's forward fits the budget (nothing to do). Otherwise each
    /// request's chunk (its id and the positions the forward carried), and the events of the
    /// requests it failed pushed to `events`. `step` calls it until `None`; benchmarks call it
    /// one forward at a time to observe each (the experts it routed to).
    pub fn prefill_forward(&mut self, events: &mut Vec<Event>) -> Option<Vec<(u64, Range<usize>)>> {
        let states: Vec<ChunkState> = self.reqs.iter().map(Req::chunk_state).collect();
        let plan = plan_prefill(&states, self.max_forward_tokens);
        if plan.is_empty() {
            return None;
        }
        let mut batch = StepBatch::default();
        let mut carried = Vec::with_capacity(plan.len());
        for c in &plan {
            let r = &self.reqs[c.req];
            batch.push(r.slot, r.cached, &r.tokens[r.cached..r.cached + c.len], r.layout.block_size);
            carried.push((r.id, r.cached..r.cached + c.len));
        }
        self.prefill_forwards += 1;
        match self.backend.prefill(&self.cfg, &batch) {
            Ok(()) => {
                for c in &plan {
                    self.reqs[c.req].cached += c.len;
                }
            }
            Err(e) => {
                // Only this forward's requests fail; the others go on.
                let ids: Vec<u64> = plan.iter().map(|c| self.reqs[c.req].id).collect();
                self.fail(&ids, &format!("{e:#}"), events);
            }
        }
        Some(carried)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

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
}
