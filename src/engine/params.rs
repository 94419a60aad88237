//! What a request asks for: SGLang's sampling parameters as the engine reads them.

use crate::decode::low_confidence::DEFAULT_THRESHOLD;
use crate::decode::sample::Sampling;
use crate::decode::Policy;

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
            policy: Policy::LowConfidence { threshold: DEFAULT_THRESHOLD },
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

impl GenParams {
    /// The sampling knobs, as the sampler takes them.
    pub fn sampling(&self) -> Sampling {
        Sampling { temperature: self.temperature, top_p: self.top_p, top_k: self.top_k }
    }
}
