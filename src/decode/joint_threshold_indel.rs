//! JointThresholdInDel (LLaDA2.2, SGLang's `JointThresholdInDel` algorithm): JointThreshold's
//! unmasking and token edits, plus two edit tokens that change a block's layout: a DELETE written
//! at a position removes it (the block shifts left and is padded with masks), a SPLIT inserts a
//! new mask before the token the position held (the block shifts right and is cut back to its
//! size). docs/MODEL.md states every rule; `tools/reference.py` (`indel_step`) is its float64
//! twin, and tests/indel_policy.rs replays that twin's step cases.
//!
//! Unlike the other algorithms a step reads more of each row than its argmax (the best token
//! other than the mask, or other than the edit tokens, or other than the tokens written at a
//! position before), so it takes the block's logits rows.

use super::joint_threshold::{check_knobs, MAX_POST_EDIT_STEPS};
use super::Setting;
use std::collections::HashSet;

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
fn argmax_where(row: &[f32], keep: impl Fn(u32) -> bool) -> Option<u32> {
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
        let b = tokens.len();
        let vocab = logits.len() / b.max(1);
        let row = |i: usize| &logits[i * vocab..(i + 1) * vocab];
        let fixed = state.fixed.min(b);
        let mut br: Vec<&'static str> = vec![];
        let mut x: Vec<u32> = (0..b).map(|i| argmax_where(row(i), |_| true).unwrap_or(ids.mask)).collect();
        let mut p: Vec<f32> = (0..b).map(|i| prob_of(row(i), x[i])).collect();
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
                    if let Some(t) = argmax_where(row(i), |t| t != ids.mask) {
                        x[i] = t;
                        p[i] = prob_of(row(i), t);
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
            return finish(tokens.to_vec(), probs.to_vec(), false, br);
        }

        // 6. The final round writes no mask, DELETE or SPLIT.
        if last {
            let banned = |t: u32| t == ids.mask || t == ids.delete || t == ids.split;
            for &i in &writes {
                if banned(x[i]) {
                    if let Some(t) = argmax_where(row(i), |t| !banned(t)) {
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
                if let Some(t) = argmax_where(row(c), |t| !excluded(t)) {
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
            written_probs[i] = prob_of(row(i), x[i]);
            if x[i] == ids.delete {
                has_indel = true;
                br.push("delete");
            } else if x[i] == ids.split {
                has_indel = true;
                br.push("split");
            }
        }
        if !has_indel {
            return finish(written, written_probs, !last, br);
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
        finish(toks, ps, !last, br)
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
        let num = |v: &Setting| match v {
            Setting::Number(x) => Ok(*x),
            Setting::Other(v) => Err(format!("{key} must be a number, got {v}")),
        };
        match key.as_str() {
            "threshold" => a.threshold = num(value)? as f32,
            "edit_threshold" => a.edit_threshold = num(value)? as f32,
            "max_post_edit_steps" => {
                let x = num(value)?;
                if !(x >= 0.0 && x.fract() == 0.0 && x <= MAX_POST_EDIT_STEPS as f64) {
                    return Err(format!("max_post_edit_steps must be a whole number in [0, {MAX_POST_EDIT_STEPS}], got {x}"));
                }
                a.max_post_edit_steps = x as usize;
            }
            _ => unknown.push(key.clone()),
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
