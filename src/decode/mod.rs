//! Decoding: what a denoising step does with the model's per-position picks. Pure functions of
//! their inputs (no backend, no engine), so the engine, the backends' CPU twins and the
//! benchmarks all share one definition of each rule.
//!
//! - `blocks.rs`: a request's block layout and each step's unmask quota;
//! - `sample.rs`: the pick of a position (argmax, or a draw with temperature / top-k / top-p);
//! - one file per unmasking algorithm (`low_confidence.rs`, `fixed_count.rs`), each owning its
//!   defaults, as SGLang's `srt/dllm/algorithm/` does;
//! - `output.rs`: where a request's output ends (max_new_tokens, stop tokens).

pub mod blocks;
pub mod fixed_count;
pub mod low_confidence;
pub mod output;
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
    /// Exactly k per step (benchmarks on random weights).
    FixedCount { k: usize },
}

/// One value of an algorithm's settings (SGLang's `--dllm-algorithm-config` YAML scalars).
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    Number(f64),
    /// Anything else, as the file spelled it (for the error message).
    Other(String),
}

/// The unmasking algorithms the server offers, by SGLang's `--dllm-algorithm` names.
pub const ALGORITHMS: &[&str] = &[low_confidence::NAME];

impl Policy {
    /// SGLang's `--dllm-algorithm NAME` (case-insensitive) with the settings of its
    /// `--dllm-algorithm-config` file. Each algorithm's file owns its keys and defaults; keys it
    /// does not know are returned so the caller can warn about them.
    pub fn from_algorithm(name: &str, settings: &[(String, Setting)]) -> Result<(Policy, Vec<String>), String> {
        if name.eq_ignore_ascii_case(low_confidence::NAME) {
            let (threshold, unknown) = low_confidence::from_settings(settings)?;
            return Ok((Policy::LowConfidence { threshold }, unknown));
        }
        Err(format!(
            "unknown diffusion algorithm {name:?}: dllm supports {}",
            ALGORITHMS.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ")
        ))
    }

    /// The positions of one block (indices into `picks`, ascending) that this step unmasks;
    /// `quota` is the step's share of the block (see [`blocks::quota_schedule`]).
    pub fn select(&self, picks: &[Pick], masked: &[bool], quota: usize) -> Vec<usize> {
        match *self {
            Policy::LowConfidence { threshold } => low_confidence::select(picks, masked, quota, threshold),
            Policy::FixedCount { k } => fixed_count::select(picks, masked, k),
        }
    }
}

/// The `k` most confident of the candidate positions (ties: lower position), ascending.
fn most_confident(picks: &[Pick], mut cand: Vec<usize>, k: usize) -> Vec<usize> {
    cand.sort_by(|&a, &b| picks[b].prob.total_cmp(&picks[a].prob).then(a.cmp(&b)));
    cand.truncate(k);
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
