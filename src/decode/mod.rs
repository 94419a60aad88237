//! Decoding: what a denoising step does with the model's per-position picks. Pure functions of
//! their inputs (no backend, no engine), so the engine, the backends' CPU twins and the
//! benchmarks all share one definition of each rule.
//!
//! - `blocks.rs`: a request's block layout and each step's unmask quota;
//! - `sample.rs`: the pick of a position (argmax, or a draw with temperature / top-k / top-p);
//! - one file per unmasking algorithm (`low_confidence.rs`, `joint_threshold.rs`,
//!   `joint_threshold_indel.rs`, `fixed_count.rs`), each owning its defaults and its config keys, as SGLang's
//!   `srt/dllm/algorithm/` does;
//! - `output.rs`: where a request's output ends (max_new_tokens, stop tokens).

pub mod blocks;
pub mod fixed_count;
pub mod joint_threshold;
pub mod joint_threshold_indel;
pub mod low_confidence;
pub mod output;
pub mod row_top;
pub mod sample;

/// The chosen token of a position and its probability (the confidence).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    pub token: u32,
    pub prob: f32,
}

/// How a step decides which masks become final.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// All masked positions with p > threshold, else the step's quota of the most confident.
    LowConfidence { threshold: f32 },
    /// Unmasking by threshold plus edits of decoded tokens (LLaDA2.1).
    JointThreshold(joint_threshold::JointThreshold),
    /// JointThreshold plus DELETE / SPLIT edits that change the block's layout (LLaDA2.2). Its
    /// steps read the block's logits rows, not only the picks: the engine runs it through
    /// [`joint_threshold_indel::JointThresholdInDel::step`], never [`Policy::step_block`].
    JointThresholdInDel(joint_threshold_indel::JointThresholdInDel),
    /// Exactly k per step (benchmarks on random weights).
    FixedCount { k: usize },
}

/// The per-request knobs of the algorithms (`dllm generate`'s flags, a request's
/// `sampling_params`); None leaves the algorithm's value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Knobs {
    pub threshold: Option<f32>,
    pub edit_threshold: Option<f32>,
    pub max_post_edit_steps: Option<usize>,
}

/// Where a block stands between its steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockProgress {
    /// Steps taken in this block.
    pub steps: usize,
    /// Of those, the steps that started with no mask left (JointThreshold's post-edit steps).
    pub post_edit_steps: usize,
}

/// What one step does to a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockStep {
    /// Positions (ascending) that take their pick.
    pub writes: Vec<usize>,
    /// Whether the block takes another step (false: it is final).
    pub open: bool,
}

/// One value of an algorithm's settings (SGLang's `--dllm-algorithm-config` YAML scalars).
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    Number(f64),
    /// Anything else, as the file spelled it (for the error message).
    Other(String),
}

/// The unmasking algorithms the server offers, by SGLang's `--dllm-algorithm` names.
pub const ALGORITHMS: &[&str] = &[low_confidence::NAME, joint_threshold::NAME, joint_threshold_indel::NAME];

impl Policy {
    /// SGLang's `--dllm-algorithm NAME` (case-insensitive) with the settings of its
    /// `--dllm-algorithm-config` file. Each algorithm's file owns its keys and defaults; keys it
    /// does not know are returned so the caller can warn about them.
    pub fn from_algorithm(name: &str, settings: &[(String, Setting)]) -> Result<(Policy, Vec<String>), String> {
        if name.eq_ignore_ascii_case(low_confidence::NAME) {
            let (threshold, unknown) = low_confidence::from_settings(settings)?;
            return Ok((Policy::LowConfidence { threshold }, unknown));
        }
        if name.eq_ignore_ascii_case(joint_threshold::NAME) {
            let (jt, unknown) = joint_threshold::from_settings(settings)?;
            return Ok((Policy::JointThreshold(jt), unknown));
        }
        if name.eq_ignore_ascii_case(joint_threshold_indel::NAME) {
            let (a, unknown) = joint_threshold_indel::from_settings(settings)?;
            return Ok((Policy::JointThresholdInDel(a), unknown));
        }
        Err(format!(
            "unknown diffusion algorithm {name:?}: dllm supports {}",
            ALGORITHMS.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ")
        ))
    }

    /// The algorithm `name` (SGLang's `--dllm-algorithm`) with its defaults and `knobs`.
    pub fn for_request(name: &str, knobs: &Knobs) -> Result<Policy, String> {
        Policy::from_algorithm(name, &[])?.0.with_knobs(knobs)
    }

    /// This policy with the knobs a flag or a request sets (None: keep). Each knob belongs to
    /// the algorithms that read it; giving one to another algorithm is an error, not a no-op.
    pub fn with_knobs(self, k: &Knobs) -> Result<Policy, String> {
        let only_joint = |name: &str, set: bool| {
            if set {
                Err(format!("{name} applies to {} and {} only, not to {}", joint_threshold::NAME, joint_threshold_indel::NAME, self.name()))
            } else {
                Ok(())
            }
        };
        match self {
            Policy::LowConfidence { threshold } => {
                only_joint("edit_threshold", k.edit_threshold.is_some())?;
                only_joint("max_post_edit_steps", k.max_post_edit_steps.is_some())?;
                let threshold = k.threshold.unwrap_or(threshold);
                low_confidence::check_threshold(threshold)?;
                Ok(Policy::LowConfidence { threshold })
            }
            Policy::JointThreshold(jt) => {
                let jt = joint_threshold::JointThreshold {
                    threshold: k.threshold.unwrap_or(jt.threshold),
                    edit_threshold: k.edit_threshold.unwrap_or(jt.edit_threshold),
                    max_post_edit_steps: k.max_post_edit_steps.unwrap_or(jt.max_post_edit_steps),
                };
                jt.check()?;
                Ok(Policy::JointThreshold(jt))
            }
            Policy::JointThresholdInDel(a) => {
                let a = joint_threshold_indel::JointThresholdInDel {
                    threshold: k.threshold.unwrap_or(a.threshold),
                    edit_threshold: k.edit_threshold.unwrap_or(a.edit_threshold),
                    max_post_edit_steps: k.max_post_edit_steps.unwrap_or(a.max_post_edit_steps),
                };
                a.check()?;
                Ok(Policy::JointThresholdInDel(a))
            }
            Policy::FixedCount { .. } => {
                if k.threshold.is_some() || k.edit_threshold.is_some() || k.max_post_edit_steps.is_some() {
                    return Err("FixedCount takes no thresholds".into());
                }
                Ok(self)
            }
        }
    }

    /// SGLang's `--dllm-algorithm` name of this policy.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::LowConfidence { .. } => low_confidence::NAME,
            Policy::JointThreshold(_) => joint_threshold::NAME,
            Policy::JointThresholdInDel(_) => joint_threshold_indel::NAME,
            Policy::FixedCount { .. } => "FixedCount",
        }
    }

    /// Whether a step reads the picks of positions that are not masks: the edit algorithms
    /// (JointThreshold, JointThresholdInDel) may rewrite a decoded token; LowConfidence and
    /// FixedCount read and write masked positions only, so the others' picks need not be made.
    pub fn reads_unmasked_picks(&self) -> bool {
        matches!(self, Policy::JointThreshold(_) | Policy::JointThresholdInDel(_))
    }

    /// One step over a block: `tokens` as the step's forward saw them (its first `fixed` are
    /// prompt tokens, never written), `picks` the forward's picks for them, `quotas` the
    /// block's unmask schedule (see [`blocks::quota_schedule`]; LowConfidence and FixedCount
    /// stop after its length). Advances `progress` and says which positions take their pick
    /// and whether the block goes on.
    pub fn step_block(
        &self,
        progress: &mut BlockProgress,
        quotas: &[usize],
        picks: &[Pick],
        tokens: &[u32],
        fixed: usize,
        mask_id: u32,
    ) -> BlockStep {
        let step = progress.steps;
        progress.steps += 1;
        let masked: Vec<bool> = tokens.iter().map(|&t| t == mask_id).collect();
        let writes = match *self {
            Policy::LowConfidence { threshold } => low_confidence::select(picks, &masked, quotas[step], threshold),
            Policy::FixedCount { k } => fixed_count::select(picks, &masked, k),
            Policy::JointThreshold(jt) => {
                let s = jt.step(picks, tokens, fixed, mask_id, progress.post_edit_steps);
                progress.post_edit_steps = s.post_edit_steps;
                let open = s.open && progress.steps < jt.max_steps(tokens.len());
                return BlockStep { writes: s.writes, open };
            }
            // Its steps need the logits rows (see the variant): called here by mistake, the block
            // is closed as it stands rather than decoded by another rule.
            Policy::JointThresholdInDel(_) => {
                debug_assert!(false, "JointThresholdInDel steps through JointThresholdInDel::step");
                return BlockStep { writes: vec![], open: false };
            }
        };
        // A position whose pick is the mask token stays masked.
        let masks_left = (0..tokens.len()).any(|i| if writes.binary_search(&i).is_ok() { picks[i].token == mask_id } else { masked[i] });
        BlockStep { writes, open: masks_left && progress.steps < quotas.len() }
    }
}

/// The `k` most confident of the candidate positions (ties: lower position), ascending.
fn most_confident(picks: &[Pick], mut cand: Vec<usize>, k: usize) -> Vec<usize> {
    if k == 0 {
        return vec![];
    }
    if k < cand.len() {
        // Which k, not their order: a selection, not a sort. The order is total (probability,
        // then position), so the k are those a sort would keep; the device waits for this
        // (a sort of each block's 32 took ~1 µs a request, 0.12 ms a step at batch 128).
        cand.select_nth_unstable_by(k - 1, |&a, &b| picks[b].prob.total_cmp(&picks[a].prob).then(a.cmp(&b)));
        cand.truncate(k);
    }
    cand.sort_unstable();
    cand
}

/// The masked positions of a block, ascending.
fn masked_positions(picks: &[Pick], masked: &[bool]) -> Vec<usize> {
    (0..picks.len()).filter(|&i| masked[i]).collect()
}

#[cfg(test)]
pub(crate) fn picks_with_probs(v: &[f32]) -> Vec<Pick> {
    v.iter().enumerate().map(|(i, &prob)| Pick { token: i as u32, prob }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The sort most_confident replaced: every candidate ordered, the first k kept.
    fn by_sort(picks: &[Pick], mut cand: Vec<usize>, k: usize) -> Vec<usize> {
        cand.sort_by(|&a, &b| picks[b].prob.total_cmp(&picks[a].prob).then(a.cmp(&b)));
        cand.truncate(k);
        cand.sort_unstable();
        cand
    }

    #[test]
    fn most_confident_keeps_what_a_sort_keeps() {
        let mut rng = Rng::new(58);
        for trial in 0..500 {
            let n = 1 + trial % 40;
            // Few distinct probabilities, so ties are common; a NaN and infinities now and then.
            let picks: Vec<Pick> = (0..n)
                .map(|i| {
                    let prob = match rng.next_u64() % 23 {
                        0 => f32::NAN,
                        1 => f32::INFINITY,
                        2 => f32::NEG_INFINITY,
                        r => (r % 5) as f32 / 4.0,
                    };
                    Pick { token: i as u32, prob }
                })
                .collect();
            let cand: Vec<usize> = (0..n).filter(|_| !rng.next_u64().is_multiple_of(4)).collect();
            for k in 0..=cand.len() + 1 {
                assert_eq!(most_confident(&picks, cand.clone(), k), by_sort(&picks, cand.clone(), k), "trial {trial}, k {k}");
            }
        }
    }
}
