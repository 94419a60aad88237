//! What a request asks for: SGLang's sampling parameters as the engine reads them.

use crate::decode::low_confidence::{check_threshold, DEFAULT_THRESHOLD};
use crate::decode::sample::{Penalties, Sampling};
use crate::decode::Policy;

/// The largest block a request may denoise at once (and the server's `--diffusion-block-size`).
pub const MAX_BLOCK_SIZE: usize = 4096;

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
    /// In [0, 1]; 0 is off (see [`Sampling::min_p`]).
    pub min_p: f32,
    /// Token id -> added to its logit at every pick.
    pub logit_bias: Vec<(u32, f32)>,
    /// In (0, 2]; 1 is off (see [`Penalties::repetition`]).
    pub repetition_penalty: f32,
    /// In [-2, 2]; 0 is off.
    pub presence_penalty: f32,
    /// In [-2, 2]; 0 is off.
    pub frequency_penalty: f32,
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
            policy: Policy::LowConfidence { threshold: DEFAULT_THRESHOLD },
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            logit_bias: vec![],
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
            stop_token_ids: vec![],
            replace_eos: false,
            ignore_eos: false,
            min_new_tokens: 0,
        }
    }
}

impl GenParams {
    /// The request's own values, checked once for every caller (the CLI, the server and the
    /// engine all come here); `vocab_size` bounds the stop tokens. Each error is the caller's.
    pub fn validate(&self, vocab_size: usize) -> Result<(), String> {
        if self.block_size == 0 || self.block_size > MAX_BLOCK_SIZE {
            return Err(format!("block size must be between 1 and {MAX_BLOCK_SIZE}, got {}", self.block_size));
        }
        if self.max_new_tokens == 0 {
            return Err("max_new_tokens must be at least 1".into());
        }
        if self.min_new_tokens > self.max_new_tokens {
            return Err(format!("min_new_tokens ({}) exceeds max_new_tokens ({})", self.min_new_tokens, self.max_new_tokens));
        }
        if let Some(s) = self.steps {
            if s == 0 || s > self.block_size {
                return Err(format!("steps must be between 1 and the block size ({}), got {s}", self.block_size));
            }
        }
        match self.policy {
            Policy::LowConfidence { threshold } => check_threshold(threshold)?,
            Policy::JointThreshold(jt) => {
                jt.check()?;
                if self.steps.is_some() {
                    // LLaDA2.1's decoder has no step schedule: a block runs until it settles.
                    return Err("steps applies to LowConfidence; JointThreshold unmasks by threshold (else one position) and runs until its block settles".into());
                }
            }
            Policy::JointThresholdInDel(a) => {
                a.check()?;
                if self.steps.is_some() {
                    return Err("steps applies to LowConfidence; JointThresholdInDel unmasks by threshold (else its quota) and runs until its block settles".into());
                }
                if self.temperature != 0.0 {
                    // SGLang's JointThresholdInDel, like LLaDA2.2's reference decoder as served,
                    // decodes greedily: its rules compare argmaxes and their probabilities.
                    return Err(format!("JointThresholdInDel decodes greedily: temperature must be 0, got {}", self.temperature));
                }
            }
            Policy::FixedCount { .. } => {}
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err("temperature must be a finite number >= 0".into());
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err("top_p must be in (0, 1]".into());
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        // SGLang's ranges; a repetition penalty of 0 or less would divide by zero or flip signs.
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty <= 2.0) {
            return Err(format!("repetition_penalty must be in (0, 2], got {}", self.repetition_penalty));
        }
        for (name, x) in [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)] {
            if !(-2.0..=2.0).contains(&x) {
                return Err(format!("{name} must be in [-2, 2], got {x}"));
            }
        }
        for &(t, b) in &self.logit_bias {
            if t as usize >= vocab_size {
                return Err(format!("logit_bias: token id {t} is outside the vocabulary ({vocab_size})"));
            }
            if !b.is_finite() {
                return Err(format!("logit_bias: the bias of token {t} must be a finite number"));
            }
        }
        if let Some(t) = self.stop_token_ids.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(format!("stop_token_ids: {t} is outside the vocabulary ({vocab_size})"));
        }
        Ok(())
    }

    /// The sampling knobs, as the sampler takes them.
    pub fn sampling(&self) -> Sampling {
        Sampling { temperature: self.temperature, top_p: self.top_p, top_k: self.top_k, min_p: self.min_p }
    }

    /// The logit bias and penalties, as the sampler takes them.
    pub fn penalties(&self) -> Penalties<'_> {
        Penalties {
            logit_bias: &self.logit_bias,
            repetition: self.repetition_penalty,
            presence: self.presence_penalty,
            frequency: self.frequency_penalty,
        }
    }

    /// Whether the picks need the full logits on the host: a draw, or logits shifted by a bias
    /// or penalty (a greedy request without either takes the backend's fused argmax).
    pub fn needs_logits(&self) -> bool {
        self.reads_rows() || self.temperature > 0.0 || !self.penalties().is_neutral()
    }

    /// Whether each step's algorithm reads the block's logits rows, not only the picks
    /// (JointThresholdInDel: the best token other than the mask, the edit tokens or the tokens
    /// written before at a position).
    pub fn reads_rows(&self) -> bool {
        matches!(self.policy, Policy::JointThresholdInDel(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::joint_threshold::JointThreshold;

    #[test]
    fn every_limit_is_checked() {
        let ok = GenParams::default();
        assert_eq!(ok.validate(100), Ok(()));
        let bad = |p: GenParams, want: &str| {
            let e = p.validate(100).unwrap_err();
            assert!(e.contains(want), "{e:?} should say {want:?}");
        };
        bad(GenParams { block_size: 0, ..ok.clone() }, "block size must be between 1 and 4096");
        bad(GenParams { block_size: MAX_BLOCK_SIZE + 1, ..ok.clone() }, "block size");
        bad(GenParams { max_new_tokens: 0, ..ok.clone() }, "max_new_tokens must be at least 1");
        bad(GenParams { min_new_tokens: 200, ..ok.clone() }, "min_new_tokens (200) exceeds");
        bad(GenParams { steps: Some(0), ..ok.clone() }, "steps must be between 1 and the block size (32)");
        bad(GenParams { steps: Some(33), ..ok.clone() }, "got 33");
        bad(GenParams { policy: Policy::LowConfidence { threshold: 1.5 }, ..ok.clone() }, "threshold must be in [0, 1]");
        let jt = crate::decode::joint_threshold::JointThreshold::default();
        assert_eq!(GenParams { policy: Policy::JointThreshold(jt), ..ok.clone() }.validate(100), Ok(()));
        bad(GenParams { policy: Policy::JointThreshold(jt), steps: Some(4), ..ok.clone() }, "steps applies to LowConfidence");
        bad(
            GenParams { policy: Policy::JointThreshold(JointThreshold { edit_threshold: -0.5, ..jt }), ..ok.clone() },
            "edit_threshold must be in [0, 1]",
        );
        let indel = Policy::JointThresholdInDel(crate::decode::joint_threshold_indel::JointThresholdInDel::default());
        let indel_ok = GenParams { policy: indel, ..ok.clone() };
        assert_eq!(indel_ok.validate(100), Ok(()));
        assert!(indel_ok.needs_logits() && indel_ok.reads_rows() && !ok.reads_rows());
        bad(GenParams { temperature: 0.7, ..indel_ok.clone() }, "JointThresholdInDel decodes greedily: temperature must be 0, got 0.7");
        bad(GenParams { steps: Some(4), ..indel_ok.clone() }, "steps applies to LowConfidence; JointThresholdInDel");
        bad(GenParams { temperature: f32::NAN, ..ok.clone() }, "temperature");
        bad(GenParams { top_p: 0.0, ..ok.clone() }, "top_p must be in (0, 1]");
        bad(GenParams { stop_token_ids: vec![3, 100], ..ok.clone() }, "stop_token_ids: 100 is outside the vocabulary (100)");
        bad(GenParams { min_p: 1.5, ..ok.clone() }, "min_p must be in [0, 1]");
        bad(GenParams { repetition_penalty: 0.0, ..ok.clone() }, "repetition_penalty must be in (0, 2]");
        bad(GenParams { repetition_penalty: -1.0, ..ok.clone() }, "repetition_penalty must be in (0, 2], got -1");
        bad(GenParams { presence_penalty: 2.5, ..ok.clone() }, "presence_penalty must be in [-2, 2]");
        bad(GenParams { frequency_penalty: -3.0, ..ok.clone() }, "frequency_penalty must be in [-2, 2]");
        bad(GenParams { logit_bias: vec![(100, 1.0)], ..ok.clone() }, "logit_bias: token id 100 is outside the vocabulary (100)");
        assert!(!ok.needs_logits());
        assert!(GenParams { logit_bias: vec![(5, 0.0)], ..ok.clone() }.needs_logits());
        assert!(GenParams { repetition_penalty: 1.1, ..ok.clone() }.needs_logits());
        assert!(!GenParams { min_p: 0.5, ..ok.clone() }.needs_logits(), "min_p never drops the argmax");
        assert_eq!(GenParams { steps: Some(32), stop_token_ids: vec![99], ..ok }.validate(100), Ok(()));
    }
}
