//! JointThreshold (LLaDA2.1's official `generate`, SGLang's `JointThreshold` algorithm):
//! mask-to-token unmasking by threshold, plus token-to-token edits of positions decoded earlier,
//! and a few edit-only steps once a block has no masks left. docs/MODEL.md states the rule.

use super::{masked_positions, most_confident, Pick, Setting};

/// Its name in SGLang's `--dllm-algorithm`.
pub const NAME: &str = "JointThreshold";

/// SGLang's defaults (its `JointThreshold` reads the same keys with these values when absent).
/// LLaDA2.1's model card calls 0.5 / 0.0 the speed preset and 0.7 / 0.5 the quality one.
pub const DEFAULT_THRESHOLD: f32 = 0.5;
pub const DEFAULT_EDIT_THRESHOLD: f32 = 0.0;
pub const DEFAULT_MAX_POST_EDIT_STEPS: usize = 16;

/// The largest `max_post_edit_steps` a request may ask for: each is a forward of the block, and
/// a request that settles never uses more; the bound keeps a typo from pinning a block.
pub const MAX_POST_EDIT_STEPS: usize = 1024;

/// Masked positions a step unmasks when none passes the threshold (the official decoder's
/// `num_to_transfer` default, SGLang's fixed top-1).
const FALLBACK_UNMASK: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JointThreshold {
    /// Masked positions with p > threshold are unmasked.
    pub threshold: f32,
    /// A decoded (non-prompt) position whose argmax differs from its token and has p above this
    /// is rewritten with the argmax.
    pub edit_threshold: f32,
    /// Steps a block may take after it has no masks left (edits only).
    pub max_post_edit_steps: usize,
}

impl Default for JointThreshold {
    fn default() -> Self {
        JointThreshold {
            threshold: DEFAULT_THRESHOLD,
            edit_threshold: DEFAULT_EDIT_THRESHOLD,
            max_post_edit_steps: DEFAULT_MAX_POST_EDIT_STEPS,
        }
    }
}

/// The knobs JointThreshold and JointThresholdInDel share, in range (both algorithms' `check`).
pub(super) fn check_knobs(threshold: f32, edit_threshold: f32, max_post_edit_steps: usize) -> Result<(), String> {
    if !(0.0..=1.0).contains(&threshold) {
        return Err(format!("threshold must be in [0, 1], got {threshold}"));
    }
    if !(0.0..=1.0).contains(&edit_threshold) {
        return Err(format!("edit_threshold must be in [0, 1], got {edit_threshold}"));
    }
    if max_post_edit_steps > MAX_POST_EDIT_STEPS {
        return Err(format!("max_post_edit_steps must be at most {MAX_POST_EDIT_STEPS}, got {max_post_edit_steps}"));
    }
    Ok(())
}

impl JointThreshold {
    /// Every knob in range; the server's flags, its config file and every request are held to this.
    pub fn check(&self) -> Result<(), String> {
        check_knobs(self.threshold, self.edit_threshold, self.max_post_edit_steps)
    }

    /// The most steps a block can take: one unmask a step at the least, then the post-edit
    /// budget. Edits that write the mask token back (a model predicting its own mask) could
    /// otherwise keep a block open forever; the official decoder has no such bound, SGLang has
    /// a like one (`block_size + max_post_edit_steps + 1` forwards, its commit forward included).
    pub fn max_steps(&self, block_size: usize) -> usize {
        block_size + self.max_post_edit_steps
    }

    /// One step over a block: `tokens` as the forward saw them, `fixed` positions (the prompt's)
    /// never written, `post_edit_steps` how many earlier steps of this block started without
    /// masks. Returns the positions to write with their pick and whether the block stays open.
    pub fn step(&self, picks: &[Pick], tokens: &[u32], fixed: usize, mask_id: u32, post_edit_steps: usize) -> JointStep {
        let masked: Vec<bool> = tokens.iter().map(|&t| t == mask_id).collect();
        let had_masks = masked.contains(&true);
        let mut writes = vec![];
        if had_masks {
            let cand = masked_positions(picks, &masked);
            let high: Vec<usize> = cand.iter().copied().filter(|&i| picks[i].prob > self.threshold).collect();
            writes = if high.len() >= FALLBACK_UNMASK.min(cand.len()) { high } else { most_confident(picks, cand, FALLBACK_UNMASK) };
        }
        // Edits look at the tokens the forward saw: a position unmasked by this very step is not
        // edited by it. The official decoder writes an edit's argmax whatever it is (the mask
        // token too, which masks the position again); so does this one.
        let edits: Vec<usize> =
            (fixed..tokens.len()).filter(|&i| !masked[i] && picks[i].token != tokens[i] && picks[i].prob > self.edit_threshold).collect();
        let edited = !edits.is_empty();
        writes.extend(edits);
        writes.sort_unstable();
        let post = post_edit_steps + usize::from(!had_masks);
        let masks_left = (0..tokens.len()).any(|i| if writes.binary_search(&i).is_ok() { picks[i].token == mask_id } else { masked[i] });
        // The official loop: a step that found no masks and edited nothing settles the block;
        // otherwise the next step runs unless it would start without masks past the budget.
        let open = if !had_masks && !edited { false } else { masks_left || post < self.max_post_edit_steps };
        JointStep { writes, post_edit_steps: post, open }
    }
}

/// What one JointThreshold step does to its block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JointStep {
    /// Positions (ascending) that take their pick: unmasks and edits.
    pub writes: Vec<usize>,
    /// The block's count of steps that started without masks, this one included.
    pub post_edit_steps: usize,
    /// Whether the block takes another step.
    pub open: bool,
}

/// A numeric setting's value, or why it is not one.
fn setting_number(key: &str, value: &Setting) -> Result<f64, String> {
    match value {
        Setting::Number(x) => Ok(*x),
        Setting::Other(v) => Err(format!("{key} must be a number, got {v}")),
    }
}

/// The config keys both editing decoders (JointThreshold, JointThresholdInDel) share:
/// `threshold`, `edit_threshold` and `max_post_edit_steps` into their knobs. Ok(false): another
/// key.
pub(super) fn read_edit_knob(
    key: &str,
    value: &Setting,
    threshold: &mut f32,
    edit_threshold: &mut f32,
    max_post_edit_steps: &mut usize,
) -> Result<bool, String> {
    match key {
        "threshold" => *threshold = setting_number(key, value)? as f32,
        "edit_threshold" => *edit_threshold = setting_number(key, value)? as f32,
        "max_post_edit_steps" => {
            let x = setting_number(key, value)?;
            if !(x >= 0.0 && x.fract() == 0.0 && x <= MAX_POST_EDIT_STEPS as f64) {
                return Err(format!("max_post_edit_steps must be a whole number in [0, {MAX_POST_EDIT_STEPS}], got {x}"));
            }
            *max_post_edit_steps = x as usize;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The settings SGLang's JointThreshold reads from `--dllm-algorithm-config`: `threshold`,
/// `edit_threshold`, `max_post_edit_steps`, `penalty_lambda`. Returns the settings (defaults for
/// the keys absent) and the keys it does not know.
pub fn from_settings(settings: &[(String, Setting)]) -> Result<(JointThreshold, Vec<String>), String> {
    let mut jt = JointThreshold::default();
    let mut unknown = vec![];
    for (key, value) in settings {
        if read_edit_knob(key, value, &mut jt.threshold, &mut jt.edit_threshold, &mut jt.max_post_edit_steps)? {
            continue;
        }
        match key.as_str() {
            // SGLang's own addition (a repetition penalty on the previous position's token);
            // LLaDA2.1's reference decoder has none, and dllm does not implement it yet.
            "penalty_lambda" => {
                if setting_number(key, value)? != 0.0 {
                    return Err(
                        "penalty_lambda (SGLang's JointThreshold extension) is not implemented yet; leave it out or set it to 0".into()
                    );
                }
            }
            _ => unknown.push(key.clone()),
        }
    }
    jt.check()?;
    Ok((jt, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u32 = 99;
    fn picks(v: &[(u32, f32)]) -> Vec<Pick> {
        v.iter().map(|&(token, prob)| Pick { token, prob }).collect()
    }
    fn jt(threshold: f32, edit_threshold: f32, max_post_edit_steps: usize) -> JointThreshold {
        JointThreshold { threshold, edit_threshold, max_post_edit_steps }
    }

    #[test]
    fn unmasks_above_threshold_else_the_most_confident() {
        let p = picks(&[(1, 0.9), (2, 0.6), (3, 0.4), (4, 0.8)]);
        let s = jt(0.5, 1.0, 16).step(&p, &[M, M, M, M], 0, M, 0);
        assert_eq!(s, JointStep { writes: vec![0, 1, 3], post_edit_steps: 0, open: true });
        let s = jt(0.95, 1.0, 16).step(&p, &[M, M, M, M], 0, M, 0);
        assert_eq!(s.writes, vec![0]);
    }

    #[test]
    fn edits_decoded_positions_never_the_prompt() {
        // Position 0 is prompt, 1 decoded and predicted otherwise, 2 decoded and agreed with,
        // 3 still masked and below the threshold: the fallback unmasks it.
        let p = picks(&[(7, 0.99), (8, 0.6), (5, 0.99), (9, 0.1)]);
        let s = jt(0.5, 0.5, 16).step(&p, &[3, 4, 5, M], 1, M, 0);
        assert_eq!(s.writes, vec![1, 3]);
        // Below the edit threshold: no edit.
        let s = jt(0.5, 0.7, 16).step(&p, &[3, 4, 5, M], 1, M, 0);
        assert_eq!(s, JointStep { writes: vec![3], post_edit_steps: 0, open: true }, "no masks left, the post-edit steps to come");
    }

    #[test]
    fn post_edit_budget_and_settling() {
        let p = picks(&[(1, 0.9), (2, 0.9)]);
        // The last masks go: the block stays open for post-edit steps (budget 2).
        let s = jt(0.5, 0.0, 2).step(&p, &[1, M], 0, M, 0);
        assert_eq!((s.writes.clone(), s.post_edit_steps, s.open), (vec![1], 0, true));
        // A maskless step that edits: the first post-edit step, one left.
        let s = jt(0.5, 0.0, 2).step(&p, &[1, 3], 0, M, 0);
        assert_eq!((s.writes.clone(), s.post_edit_steps, s.open), (vec![1], 1, true));
        // The second edits too: the budget is spent.
        let s = jt(0.5, 0.0, 2).step(&p, &[1, 3], 0, M, 1);
        assert_eq!((s.post_edit_steps, s.open), (2, false));
        // A maskless step that changes nothing settles the block.
        let s = jt(0.5, 0.0, 2).step(&p, &[1, 2], 0, M, 0);
        assert_eq!((s.writes.clone(), s.open), (vec![], false));
        // Budget 0: the step that unmasks the last mask ends the block.
        let s = jt(0.5, 0.0, 0).step(&p, &[1, M], 0, M, 0);
        assert!(!s.open);
    }

    #[test]
    fn a_mask_prediction_keeps_the_block_open() {
        let p = picks(&[(M, 0.9), (2, 0.9)]);
        let s = jt(0.5, 0.0, 0).step(&p, &[M, 2], 0, M, 0);
        assert_eq!((s.writes.clone(), s.open), (vec![0], true));
    }

    #[test]
    fn settings_keys() {
        let num = |k: &str, v| (k.to_string(), Setting::Number(v));
        assert_eq!(from_settings(&[]), Ok((JointThreshold::default(), vec![])));
        let (j, unknown) = from_settings(&[
            num("threshold", 0.7),
            num("edit_threshold", 0.5),
            num("max_post_edit_steps", 4.0),
            num("penalty_lambda", 0.0),
            num("x", 1.0),
        ])
        .unwrap();
        assert_eq!((j, unknown), (jt(0.7, 0.5, 4), vec!["x".to_string()]));
        for (bad, want) in [
            (num("max_post_edit_steps", 1.5), "whole number"),
            (num("max_post_edit_steps", -1.0), "whole number"),
            (num("edit_threshold", 2.0), "edit_threshold must be in [0, 1]"),
            (num("penalty_lambda", 0.5), "not implemented yet"),
            (("threshold".into(), Setting::Other("\"hi\"".into())), "threshold must be a number"),
        ] {
            let e = from_settings(&[bad]).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
