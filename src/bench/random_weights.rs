//! Step timing on random device weights of a preset (shapes that cannot be shipped):
//! a prompt of `prefix_len` random ids, then `blocks` blocks of `block` tokens, one token
//! unmasked per step (FixedCount 1: random weights make thresholds meaningless), so every
//! block takes `block` denoising steps. Each step ends with the picks on the host, so the
//! wall clock around `Engine::step` is the real step time (launches and host work included).

use super::engines::{cuda_engine, ModelSource};
use crate::backend::cuda::CudaOptions;
use crate::decode::Policy;
use crate::engine::{Event, GenParams};
use crate::rng::Rng;
use anyhow::{bail, Result};

pub struct StepTimes {
    pub backend: String,
    /// The first step: prompt prefill + the first block.
    pub first_ms: f64,
    /// Every later step, in order.
    pub steps_ms: Vec<f64>,
    /// Per-kernel time over the later steps (`profile_kernels`): (name, ms per step, calls per step).
    pub profile: Vec<(String, f64, f64)>,
}

impl StepTimes {
    pub fn median_ms(&self) -> f64 {
        let mut v = self.steps_ms.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return f64::NAN;
        }
        v[v.len() / 2]
    }
}

pub fn random_steps(
    preset_name: &str,
    prefix_len: usize,
    block: usize,
    blocks: usize,
    seed: u64,
    profile_kernels: bool,
    quantization: Option<crate::fp8::Quantization>,
) -> Result<StepTimes> {
    let opts = CudaOptions { profile_kernels, quantization, ..CudaOptions::default() };
    let mut engine = cuda_engine(&ModelSource::Preset(preset_name.to_string(), crate::config::Family::Llada20), seed, &opts)?;
    let v = engine.cfg.vocab_size as u32;
    let mut rng = Rng::new(seed);
    let limit = v.min(150_000) - 2;
    let prompt: Vec<u32> = (0..prefix_len.max(1)).map(|_| (rng.next_u64() % limit as u64) as u32).collect();
    let params = GenParams {
        max_new_tokens: block * blocks,
        block_size: block,
        policy: Policy::FixedCount { k: 1 },
        ignore_eos: true,
        ..GenParams::default()
    };
    let name = crate::engine::DynEngine::backend_name(&engine);
    engine.add(prompt, params)?;
    let mut times = vec![];
    loop {
        let t0 = std::time::Instant::now();
        let evs = engine.step();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        if times.len() == 1 {
            engine.backend.profile_reset(); // the breakdown is of the steps after prefill
        }
        for ev in evs {
            match ev {
                Event::Done { .. } => {
                    let n = (times.len() - 1).max(1) as f64;
                    let profile = engine.backend.profile().into_iter().map(|(k, t, c)| (k, t / n, c as f64 / n)).collect();
                    return Ok(StepTimes { backend: name, first_ms: times[0], steps_ms: times[1..].to_vec(), profile });
                }
                Event::Failed { error, .. } => bail!(error),
                _ => {}
            }
        }
    }
}

/// Time denoising steps on random device weights of a preset (`generate --random-weights`):
/// returns a one-line report (after the per-kernel times when `profile_kernels`).
pub fn random_weights_steps(
    preset: &str,
    prefix_len: usize,
    block: usize,
    blocks: usize,
    seed: u64,
    profile_kernels: bool,
    quantization: Option<crate::fp8::Quantization>,
) -> Result<String> {
    let t = random_steps(preset, prefix_len, block, blocks, seed, profile_kernels, quantization)?;
    for (name, ms, calls) in &t.profile {
        eprintln!("  {name:<28} {ms:8.3} ms/step  {calls:6.1} calls/step");
    }
    Ok(format!(
        "{preset} random weights, prefix {prefix_len}, block {block}, batch 1: first step (prefill) {:.2} ms; {} later steps: median {:.3} ms/step, min {:.3}, max {:.3} [{}]",
        t.first_ms,
        t.steps_ms.len(),
        t.median_ms(),
        t.steps_ms.iter().cloned().fold(f64::INFINITY, f64::min),
        t.steps_ms.iter().cloned().fold(0.0, f64::max),
        t.backend
    ))
}
