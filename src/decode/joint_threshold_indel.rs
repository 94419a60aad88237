//! JointThresholdInDel (LLaDA2.2, SGLang's `JointThresholdInDel` algorithm): JointThreshold's
//! unmasking and token edits, plus two edit tokens that change a block's layout: a DELETE written
//! at a position removes it (the block shifts left and is padded with masks), a SPLIT inserts a
//! new mask before the token the position held (the block shifts right and is cut back to its
//! size). docs/MODEL.md states every rule; `tools/reference.py` (`indel_step`) is its float64
//! twin, and tests/indel_policy.rs replays that twin's step cases.
//!
//! Unlike the other algorithms a step reads more of each row than its argmax (the best token
//! other than the mask, or other than the edit tokens, or other than the tokens written at a
//! position before), so it reads the block's rows through [`StepRows`]: whole rows
//! ([`FullRows`]), or their summaries ([`TopRows`]: the best entries, m and z, which answer as
//! the whole rows do and read a row whole only where they cannot).

use super::joint_threshold::{check_knobs, read_edit_knob};
use super::row_top::RowTop;
use super::Setting;
use std::collections::HashSet;
use std::convert::Infallible;

/// Its name in SGLang's `--dllm-algorithm`.
pub const NAME: &str = "JointThresholdInDel";

/// SGLang's defaults (LLaDA2.2's `generate` has the same: threshold 0.5, editing threshold 0,
/// 16 post-edit steps).
pub const DEFAULT_THRESHOLD: f32 = 0.5;
pub const DEFAULT_EDIT_THRESHOLD: f32 = 0.0;
pub const DEFAULT_MAX_POST_EDIT_STEPS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JointThresholdInDel {
    /// Masked positions with p > threshold are unmasked (while enough pass it).
    pub threshold: f32,
    /// A decoded (non-prompt) position whose pick differs from its token and has p above this
    /// takes the pick (which may be DELETE or SPLIT).
    pub edit_threshold: f32,
    /// Steps that may start without an original mask before the final round.
    pub max_post_edit_steps: usize,
}

impl Default for JointThresholdInDel {
    fn default() -> Self {
        JointThresholdInDel {
            threshold: DEFAULT_THRESHOLD,
            edit_threshold: DEFAULT_EDIT_THRESHOLD,
            max_post_edit_steps: DEFAULT_MAX_POST_EDIT_STEPS,
        }
    }
}

/// The special tokens the algorithm reads: the mask and the two edit tokens (config.json's
/// `mask_token_id`, `delete_token_id`, `split_token_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EditIds {
    pub mask: u32,
    pub delete: u32,
    pub split: u32,
}

impl EditIds {
    /// The ids of a checkpoint, checked: all three present, distinct and inside the vocabulary.
    pub fn new(mask: u32, delete: Option<u32>, split: Option<u32>, vocab_size: usize) -> Result<EditIds, String> {
        let (Some(delete), Some(split)) = (delete, split) else {
            return Err(format!(
                "{NAME} needs the checkpoint's delete_token_id and split_token_id (config.json has {}); \
                 this is not a LLaDA2.2 checkpoint: use LowConfidence or JointThreshold",
                match (delete, split) {
                    (None, None) => "neither".to_string(),
                    (None, Some(_)) => "no delete_token_id".to_string(),
                    _ => "no split_token_id".to_string(),
                }
            ));
        };
        for (name, id) in [("delete_token_id", delete), ("split_token_id", split)] {
            if id as usize >= vocab_size {
                return Err(format!("config.json's {name} {id} is outside the vocabulary ({vocab_size})"));
            }
        }
        if delete == split || delete == mask || split == mask {
            return Err(format!("config.json's mask ({mask}), delete ({delete}) and split ({split}) token ids must be distinct"));
        }
        Ok(EditIds { mask, delete, split })
    }
}

/// Where a block stands between its steps; a new one for every block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InDelState {
    /// The block's prompt positions (its first `fixed`): never written, never edited.
    pub fixed: usize,
    /// Per position: the mask there descends from one the block started with (edits move the
    /// flag with their token; masks that SPLIT inserts or padding adds are new).
    pub is_orig_mask: Vec<bool>,
    /// Steps that started with no original mask left.
    pub post_edit_steps: usize,
    /// Steps taken.
    pub update_steps: usize,
    /// The input blocks of the earlier steps.
    seen: HashSet<Vec<u32>>,
    /// Per position: the tokens earlier steps wrote there.
    sampled: Vec<Vec<u32>>,
}

impl InDelState {
    pub fn start(block: &[u32], fixed: usize, mask_id: u32) -> InDelState {
        InDelState {
            fixed,
            is_orig_mask: block.iter().enumerate().map(|(i, &t)| i >= fixed && t == mask_id).collect(),
            sampled: vec![vec![]; block.len()],
            ..InDelState::default()
        }
    }
}

/// What one step does to its block.
#[derive(Debug, Clone, PartialEq)]
pub struct InDelStep {
    /// The block after the step (its size unchanged).
    pub tokens: Vec<u32>,
    /// Per position: the probability of the pick that wrote its token (kept from `probs` for a
    /// token the step did not write, 0 for a mask).
    pub probs: Vec<f32>,
    /// Whether the block takes another step.
    pub open: bool,
    /// The rules the step took, by the names reference.py's `indel_step` gives them (tests).
    pub branches: Vec<&'static str>,
}

/// The first index of the largest logit among the tokens `keep` allows (None: it allows none).
fn argmax_where(row: &[f32], keep: &dyn Fn(u32) -> bool) -> Option<u32> {
    let mut best: Option<usize> = None;
    for (i, &l) in row.iter().enumerate() {
        if keep(i as u32) && best.is_none_or(|b| l > row[b]) {
            best = Some(i);
        }
    }
    best.map(|b| b as u32)
}

/// softmax(row)[t], as [`super::sample::pick_row`] computes the argmax's.
fn prob_of(row: &[f32], t: u32) -> f32 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f32 = row.iter().map(|&l| (l - m).exp()).sum();
    (row[t as usize] - m).exp() / z
}

/// The block's logits rows as a step reads them: per position the best token among those a
/// rule allows, and a token's softmax probability.
pub trait StepRows {
    /// Why a row could not be read (whole rows: never).
    type Error;
    /// [`argmax_where`] over position `i`'s row.
    fn argmax_where(&mut self, i: usize, keep: &dyn Fn(u32) -> bool) -> Result<Option<u32>, Self::Error>;
    /// [`prob_of`] over position `i`'s row.
    fn prob_of(&mut self, i: usize, t: u32) -> Result<f32, Self::Error>;
}

/// Whole rows: `logits` holds the block's rows back to back.
pub struct FullRows<'a> {
    logits: &'a [f32],
    vocab: usize,
}

impl<'a> FullRows<'a> {
    /// `rows` rows of `logits.len() / rows` each.
    pub fn new(logits: &'a [f32], rows: usize) -> Self {
        FullRows { logits, vocab: logits.len() / rows.max(1) }
    }

    fn row(&self, i: usize) -> &'a [f32] {
        &self.logits[i * self.vocab..(i + 1) * self.vocab]
    }
}

impl StepRows for FullRows<'_> {
    type Error = Infallible;
    fn argmax_where(&mut self, i: usize, keep: &dyn Fn(u32) -> bool) -> Result<Option<u32>, Infallible> {
        Ok(argmax_where(self.row(i), keep))
    }
    fn prob_of(&mut self, i: usize, t: u32) -> Result<f32, Infallible> {
        Ok(prob_of(self.row(i), t))
    }
}

/// Rows by their summaries ([`RowTop`], one per position), each answer the one its whole row
/// gives: the best allowed token is the first allowed entry, a token's probability among the
/// entries is exp(l - m) / z with the row's own m and z. Where the entries cannot answer (every
/// one excluded, a token outside them, a row with a NaN or an infinity) `fetch(i)` reads
/// position `i`'s whole row, once, and it answers instead.
pub struct TopRows<'a, F> {
    tops: &'a [RowTop],
    fetch: F,
    whole: Vec<Option<Vec<f32>>>,
}

impl<'a, F: FnMut(usize) -> Result<Vec<f32>, String>> TopRows<'a, F> {
    pub fn new(tops: &'a [RowTop], fetch: F) -> Self {
        TopRows { tops, fetch, whole: vec![None; tops.len()] }
    }

    /// The summary of position `i`, where it speaks for its row.
    fn top(&self, i: usize) -> Result<Option<&'a RowTop>, String> {
        let t = self.tops.get(i).ok_or_else(|| format!("no logits row summary for block position {i} of {}", self.tops.len()))?;
        Ok(t.usable().then_some(t))
    }

    /// Position `i`'s whole row, read on first use.
    fn whole(&mut self, i: usize) -> Result<&[f32], String> {
        if self.whole[i].is_none() {
            self.whole[i] = Some((self.fetch)(i)?);
        }
        Ok(self.whole[i].as_deref().unwrap_or_default())
    }
}

impl<F: FnMut(usize) -> Result<Vec<f32>, String>> StepRows for TopRows<'_, F> {
    type Error = String;
    fn argmax_where(&mut self, i: usize, keep: &dyn Fn(u32) -> bool) -> Result<Option<u32>, String> {
        if let Some(t) = self.top(i)? {
            // The entries are the row's best in (logit descending, id ascending) order, so the
            // first allowed one is the row's first allowed maximum.
            if let Some(&(id, _)) = t.top.iter().find(|e| keep(e.0)) {
                return Ok(Some(id));
            }
            if t.complete() {
                return Ok(None);
            }
        }
        Ok(argmax_where(self.whole(i)?, keep))
    }
    fn prob_of(&mut self, i: usize, t: u32) -> Result<f32, String> {
        if let Some(p) = self.top(i)?.and_then(|s| s.prob_of(t)) {
            return Ok(p);
        }
        Ok(prob_of(self.whole(i)?, t))
    }
}

impl JointThresholdInDel {
    /// Every knob in range; the server's flags, its config file and every request are held to this.
    pub fn check(&self) -> Result<(), String> {
        check_knobs(self.threshold, self.edit_threshold, self.max_post_edit_steps)
    }

    /// The most steps a block takes: the step after `block_size + max_post_edit_steps` is the
    /// final round, which always closes it.
    pub fn max_steps(&self, block_size: usize) -> usize {
        block_size + self.max_post_edit_steps + 1
    }

    /// One step over a block: `tokens` as the step's forward saw them, `probs` their pick
    /// probabilities, `logits` the forward's rows for them (`tokens.len()` rows of `vocab`).
    /// Advances `state`. docs/MODEL.md gives the rules in this order.
    pub fn step(&self, state: &mut InDelState, tokens: &[u32], probs: &[f32], logits: &[f32], ids: EditIds) -> InDelStep {
        match self.step_rows(state, tokens, probs, &mut FullRows::new(logits, tokens.len()), ids) {
            Ok(s) => s,
            Err(never) => match never {},
        }
    }

    /// [`JointThresholdInDel::step`] reading the block's rows through `rows` (one per token);
    /// fails only where a row cannot be read.
    pub fn step_rows<R: StepRows>(
        &self,
        state: &mut InDelState,
        tokens: &[u32],
        probs: &[f32],
        rows: &mut R,
        ids: EditIds,
    ) -> Result<InDelStep, R::Error> {
        let b = tokens.len();
        let fixed = state.fixed.min(b);
        let mut br: Vec<&'static str> = vec![];
        let mut x = Vec::with_capacity(b);
        let mut p = Vec::with_capacity(b);
        for i in 0..b {
            x.push(rows.argmax_where(i, &|_| true)?.unwrap_or(ids.mask));
            p.push(rows.prob_of(i, x[i])?);
        }
        let masked: Vec<bool> = (0..b).map(|i| i >= fixed && tokens[i] == ids.mask).collect();
        let orig_masked: Vec<bool> = (0..b).map(|i| masked[i] && state.is_orig_mask.get(i).copied().unwrap_or(false)).collect();
        let n_total = masked.iter().filter(|&&m| m).count();
        let n_orig = orig_masked.iter().filter(|&&m| m).count();
        let n_new = n_total - n_orig;

        // 1. The counters, then whether this is the final round.
        state.update_steps += 1;
        if n_orig == 0 {
            state.post_edit_steps += 1;
        }
        let over_budget = state.post_edit_steps > self.max_post_edit_steps;
        let over_cap = state.update_steps > b + self.max_post_edit_steps;
        let last = over_budget || over_cap;
        if over_budget {
            br.push("final_budget");
        } else if over_cap {
            br.push("final_step_cap");
        }

        // 2. Outside the final round an original mask never takes the mask token: its pick is
        // the best other token, with that token's probability.
        if !last {
            for i in 0..b {
                if orig_masked[i] && x[i] == ids.mask {
                    if let Some(t) = rows.argmax_where(i, &|t| t != ids.mask)? {
                        x[i] = t;
                        p[i] = rows.prob_of(i, t)?;
                    }
                    br.push("mask_pick_replaced");
                }
            }
        }

        // 3. Mask to token.
        let cand: Vec<usize> = (0..b).filter(|&i| masked[i]).collect();
        let m2t: Vec<usize> = if cand.is_empty() {
            vec![]
        } else if last {
            br.push("m2t_final_all");
            cand
        } else if n_orig > 0 {
            // Masks the edits created raise the quota: at least one original mask goes each step.
            let need = 1 + n_new;
            if n_new > 0 {
                br.push("quota_raised");
            }
            let high: Vec<usize> = cand.iter().copied().filter(|&i| p[i] > self.threshold).collect();
            if high.len() >= need {
                br.push("m2t_threshold");
                high
            } else {
                br.push("m2t_top");
                let mut ranked = cand;
                ranked.sort_by(|&i, &j| p[j].total_cmp(&p[i]).then(i.cmp(&j)));
                ranked.truncate(need.min(n_total));
                ranked
            }
        } else {
            br.push("m2t_new_masks_all");
            cand
        };

        // 4. Token to token.
        let mut t2t = vec![];
        for i in fixed..b {
            if masked[i] || x[i] == tokens[i] {
                continue;
            }
            if p[i] > self.edit_threshold {
                t2t.push(i);
            } else {
                br.push("edit_declined");
            }
        }
        if !t2t.is_empty() {
            br.push("edit");
        }
        let mut writes: Vec<usize> = m2t.into_iter().chain(t2t).collect();
        writes.sort_unstable();
        writes.dedup();

        // 5. Nothing to write: the block is final.
        if writes.is_empty() {
            br.push("no_change_exit");
            return Ok(finish(tokens.to_vec(), probs.to_vec(), false, br));
        }

        // 6. The final round writes no mask, DELETE or SPLIT.
        if last {
            let banned = |t: u32| t == ids.mask || t == ids.delete || t == ids.split;
            for &i in &writes {
                if banned(x[i]) {
                    if let Some(t) = rows.argmax_where(i, &|t| !banned(t))? {
                        x[i] = t;
                    }
                    br.push("final_ban");
                }
            }
        }

        // 7. Cycles: an input block seen before (outside the final round) rewrites the least
        // confident changing write with the best token not yet written at its position.
        if !last && state.seen.contains(tokens) {
            let changing = writes.iter().copied().filter(|&i| x[i] != tokens[i]);
            if let Some(c) = changing.min_by(|&i, &j| p[i].total_cmp(&p[j]).then(i.cmp(&j))) {
                let done = state.sampled.get(c).cloned().unwrap_or_default();
                let excluded = |t: u32| done.contains(&t) || (orig_masked[c] && t == ids.mask);
                if let Some(t) = rows.argmax_where(c, &|t| !excluded(t))? {
                    x[c] = t;
                }
                br.push("cycle_resample");
            }
        }
        state.seen.insert(tokens.to_vec());

        // 8. The writes, then DELETE / SPLIT.
        if state.sampled.len() < b {
            state.sampled.resize(b, vec![]);
        }
        let mut written = tokens.to_vec();
        let mut written_probs = probs.to_vec();
        let mut has_indel = false;
        for &i in &writes {
            if !state.sampled[i].contains(&x[i]) {
                state.sampled[i].push(x[i]);
            }
            written[i] = x[i];
            written_probs[i] = rows.prob_of(i, x[i])?;
            if x[i] == ids.delete {
                has_indel = true;
                br.push("delete");
            } else if x[i] == ids.split {
                has_indel = true;
                br.push("split");
            }
        }
        if !has_indel {
            return Ok(finish(written, written_probs, !last, br));
        }
        let mut out = Vec::with_capacity(b + 1);
        let mut orig = Vec::with_capacity(b + 1);
        for i in 0..b {
            let flag = state.is_orig_mask.get(i).copied().unwrap_or(false);
            if i < fixed {
                out.push((tokens[i], probs[i]));
                orig.push(flag);
            } else if written[i] == ids.delete {
                continue;
            } else if written[i] == ids.split {
                out.push((ids.mask, 0.0));
                orig.push(false);
                out.push((tokens[i], probs[i]));
                orig.push(flag);
            } else {
                out.push((written[i], written_probs[i]));
                orig.push(flag);
            }
        }
        if out.len() < b {
            br.push("pad");
        } else if out.len() > b {
            br.push("truncate");
        }
        out.resize(b, (ids.mask, 0.0));
        orig.resize(b, false);
        state.is_orig_mask = orig;
        let (toks, ps) = out.into_iter().unzip();
        Ok(finish(toks, ps, !last, br))
    }
}

fn finish(tokens: Vec<u32>, probs: Vec<f32>, open: bool, mut branches: Vec<&'static str>) -> InDelStep {
    branches.sort_unstable();
    branches.dedup();
    InDelStep { tokens, probs, open, branches }
}

/// The settings SGLang's JointThresholdInDel reads from `--dllm-algorithm-config`: `threshold`,
/// `edit_threshold`, `max_post_edit_steps`. Returns the settings (defaults for the keys absent)
/// and the keys it does not know.
pub fn from_settings(settings: &[(String, Setting)]) -> Result<(JointThresholdInDel, Vec<String>), String> {
    let mut a = JointThresholdInDel::default();
    let mut unknown = vec![];
    for (key, value) in settings {
        if !read_edit_knob(key, value, &mut a.threshold, &mut a.edit_threshold, &mut a.max_post_edit_steps)? {
            unknown.push(key.clone());
        }
    }
    a.check()?;
    Ok((a, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: EditIds = EditIds { mask: 9, delete: 7, split: 8 };
    const V: usize = 10;

    /// Rows whose argmax is `t` with logit 5 (the rest 0), so p = e^5 / (e^5 + 9) ≈ 0.94.
    fn rows(picks: &[u32]) -> Vec<f32> {
        picks.iter().flat_map(|&t| (0..V as u32).map(move |v| if v == t { 5.0 } else { 0.0 })).collect()
    }

    #[test]
    fn delete_pads_and_split_truncates() {
        let a = JointThresholdInDel::default();
        // Prompt 1, 2; masks at 2..6: DELETE at 2, SPLIT at 3, tokens elsewhere.
        let block = [1, 2, 9, 9, 9, 9];
        let mut st = InDelState::start(&block, 2, 9);
        let s = a.step(&mut st, &block, &[0.0; 6], &rows(&[0, 0, 7, 8, 3, 4]), IDS);
        // DELETE drops 2; SPLIT at 3 gives [new mask, the mask it held]; 3 and 4 follow; one pad.
        assert_eq!(s.tokens, vec![1, 2, 9, 9, 3, 4]);
        assert_eq!(st.is_orig_mask, vec![false, false, false, true, true, true]);
        assert!(s.open);
        assert_eq!(s.branches, vec!["delete", "m2t_threshold", "split"]);
        // A maskless block whose first decoded token SPLITs: the last token is cut.
        let block = [1, 3, 4, 5];
        let mut st = InDelState::start(&block, 1, 9);
        let s = a.step(&mut st, &block, &[0.5; 4], &rows(&[1, 8, 4, 5]), IDS);
        assert_eq!(s.tokens, vec![1, 9, 3, 4]);
        assert_eq!(s.probs[..3], [0.5, 0.0, 0.5]);
        assert!(s.branches.contains(&"truncate"));
    }

    #[test]
    fn the_final_round_bans_edit_tokens_and_closes() {
        let a = JointThresholdInDel { max_post_edit_steps: 0, ..Default::default() };
        let block = [1, 2, 3];
        let mut st = InDelState::start(&block, 0, 9);
        // No original mask: the first step is already past a budget of 0.
        let s = a.step(&mut st, &block, &[0.0; 3], &rows(&[7, 2, 8]), IDS);
        assert!(!s.open);
        assert!(s.tokens.iter().all(|&t| t != 7 && t != 8 && t != 9), "{:?}", s.tokens);
        assert!(s.branches.contains(&"final_ban") && s.branches.contains(&"final_budget"));
    }

    /// Random rows of `v` tokens: flat, peaked, tied (quarter steps), with -inf entries.
    fn random_rows(rng: &mut crate::rng::Rng, n: usize, v: usize) -> Vec<f32> {
        (0..n * v)
            .map(|i| {
                let x = rng.normal() as f32;
                match (i / v) % 4 {
                    0 => x,
                    1 => 4.0 * x,
                    2 => (x * 4.0).round() / 4.0,
                    _ if i % 5 == 0 => f32::NEG_INFINITY,
                    _ => x,
                }
            })
            .collect()
    }

    #[test]
    fn summaries_answer_as_whole_rows_and_read_a_row_only_when_they_cannot() {
        use crate::decode::row_top::{row_top, ROW_TOP_K};
        let mut rng = crate::rng::Rng::new(11);
        for v in [3, ROW_TOP_K, ROW_TOP_K + 5, 300] {
            let n = 12;
            let mut logits = random_rows(&mut rng, n, v);
            logits[5 * v + v / 2] = f32::NAN;
            let tops: Vec<_> = logits.chunks(v).map(|r| row_top(r, 0)).collect();
            let mut fetched = vec![];
            let mut sum = TopRows::new(&tops, |i| {
                fetched.push(i);
                Ok(logits[i * v..(i + 1) * v].to_vec())
            });
            let mut full = FullRows::new(&logits, n);
            for (i, top) in tops.iter().enumerate() {
                let order: Vec<u32> = top.top.iter().map(|e| e.0).collect();
                // Keep all; drop the first j of the row's order (past ROW_TOP_K: every entry);
                // keep only odd ids; keep none.
                let mut keeps: Vec<Box<dyn Fn(u32) -> bool>> = vec![Box::new(|_| true), Box::new(|t| t % 2 == 1), Box::new(|_| false)];
                for j in [1, ROW_TOP_K - 1, ROW_TOP_K, ROW_TOP_K + 3] {
                    let dropped: Vec<u32> =
                        order.iter().copied().take(j).chain((0..j.saturating_sub(order.len())).map(|x| x as u32)).collect();
                    keeps.push(Box::new(move |t| !dropped.contains(&t)));
                }
                for keep in &keeps {
                    assert_eq!(sum.argmax_where(i, keep.as_ref()), Ok(full.argmax_where(i, keep.as_ref()).unwrap()), "v {v} row {i}");
                }
                for t in (0..v as u32).step_by(v.div_ceil(7)).chain(order.iter().copied()) {
                    let (a, b) = (sum.prob_of(i, t).unwrap(), full.prob_of(i, t).unwrap());
                    assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "v {v} row {i} token {t}: {a} vs {b}");
                }
            }
            drop(sum);
            fetched.dedup();
            // Only rows a summary could not answer for were read, each once.
            assert!(fetched.windows(2).all(|w| w[0] < w[1]), "{fetched:?}");
            assert!(fetched.contains(&5), "the row with a NaN is read whole");
            if v < ROW_TOP_K {
                assert_eq!(fetched, vec![5], "a short vocabulary's summary is the whole row");
            }
        }
    }

    #[test]
    fn steps_over_summaries_equal_steps_over_whole_rows() {
        use crate::decode::row_top::{row_top, ROW_TOP_K};
        let ids = EditIds { mask: 17, delete: 18, split: 19 };
        let v = 20;
        assert!(v > ROW_TOP_K);
        let mut rng = crate::rng::Rng::new(5);
        let (mut steps, mut fetches, mut cycles) = (0, 0, 0);
        for episode in 0..300 {
            let b = [4, 8][episode % 2];
            let a = JointThresholdInDel { threshold: 0.3, edit_threshold: 0.0, max_post_edit_steps: 4 + episode % 5 };
            let fixed = episode % 3;
            let mut block: Vec<u32> = (0..b).map(|i| if i < fixed { i as u32 } else { ids.mask }).collect();
            let (mut st_full, mut probs) = (InDelState::start(&block, fixed, ids.mask), vec![0.0; b]);
            let mut st_sum = st_full.clone();
            // The same rows every step but one in three (rows that repeat make blocks repeat,
            // which takes the cycle rule), peaked on the edit tokens at times.
            let mut logits = random_rows(&mut rng, b, v);
            for _ in 0..a.max_steps(b) {
                if rng.next_u64().is_multiple_of(3) {
                    logits = random_rows(&mut rng, b, v);
                    let i = (rng.next_u64() % b as u64) as usize;
                    logits[i * v + 17 + (rng.next_u64() % 3) as usize] += 6.0;
                }
                let tops: Vec<_> = logits.chunks(v).map(|r| row_top(r, 0)).collect();
                let want = a.step(&mut st_full, &block, &probs, &logits, ids);
                let mut n = 0;
                let got = a.step_rows(
                    &mut st_sum,
                    &block,
                    &probs,
                    &mut TopRows::new(&tops, |i| {
                        n += 1;
                        Ok(logits[i * v..(i + 1) * v].to_vec())
                    }),
                    ids,
                );
                assert_eq!(got.as_ref(), Ok(&want), "episode {episode} step {steps}");
                assert_eq!(st_sum, st_full);
                steps += 1;
                fetches += n;
                cycles += usize::from(want.branches.contains(&"cycle_resample"));
                block = want.tokens;
                probs = want.probs;
                if !want.open {
                    break;
                }
            }
        }
        eprintln!("{steps} steps, {cycles} cycle resamples, {fetches} rows read whole");
        assert!(cycles > 0, "no step took the cycle rule");
    }

    #[test]
    fn a_settled_block_closes_without_writes() {
        let a = JointThresholdInDel::default();
        let block = [1, 2, 3];
        let mut st = InDelState::start(&block, 1, 9);
        let s = a.step(&mut st, &block, &[0.3; 3], &rows(&[4, 2, 3]), IDS);
        assert_eq!((s.tokens.clone(), s.open, s.branches), (block.to_vec(), false, vec!["no_change_exit"]));
    }

    #[test]
    fn edit_ids_are_checked() {
        assert_eq!(EditIds::new(9, Some(7), Some(8), 10), Ok(IDS));
        for (d, s, want) in [
            (None, None, "needs the checkpoint's delete_token_id and split_token_id"),
            (Some(7), None, "no split_token_id"),
            (Some(7), Some(7), "must be distinct"),
            (Some(9), Some(8), "must be distinct"),
            (Some(7), Some(10), "outside the vocabulary"),
        ] {
            let e = EditIds::new(9, d, s, 10).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn settings_keys() {
        let num = |k: &str, v| (k.to_string(), Setting::Number(v));
        assert_eq!(from_settings(&[]), Ok((JointThresholdInDel::default(), vec![])));
        let (a, unknown) = from_settings(&[num("threshold", 0.7), num("max_post_edit_steps", 2.0), num("y", 1.0)]).unwrap();
        assert_eq!(a, JointThresholdInDel { threshold: 0.7, edit_threshold: 0.0, max_post_edit_steps: 2 });
        assert_eq!(unknown, vec!["y".to_string()]);
        assert!(from_settings(&[num("max_post_edit_steps", 0.5)]).unwrap_err().contains("whole number"));
        assert!(from_settings(&[num("threshold", 1.5)]).unwrap_err().contains("threshold must be in [0, 1]"));
    }
}
