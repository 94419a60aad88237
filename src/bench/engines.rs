//! The engine a benchmark runs on: a checkpoint directory, or a preset's random weights (CUDA:
//! made on the device, so shapes that cannot be shipped, like flash, still run). One function per
//! backend, shared by `bench step|generate|kernels` and `generate --random-weights`.

use crate::backend::cpu::CpuBackend;
use crate::backend::ranks::Ranks;
use crate::backend::shard::Shard;
use crate::checkpoint::Checkpoint;
use crate::config::{Family, ModelConfig};
use crate::engine::Engine;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::sync::Arc;

/// What `--preset` names: an existing directory is a checkpoint, anything else a preset, whose
/// config is `--family`'s release of that shape (2.2: block routing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Checkpoint(PathBuf),
    Preset(String, Family),
}

impl ModelSource {
    pub fn parse(preset_or_dir: &str, family: Family) -> Self {
        let p = PathBuf::from(preset_or_dir);
        if p.is_dir() {
            ModelSource::Checkpoint(p)
        } else {
            ModelSource::Preset(preset_or_dir.to_string(), family)
        }
    }
}

/// The CPU engine: a checkpoint, or the tiny preset (the embedded default model; the CPU backend
/// holds f32 weights in host memory, so the big presets are not offered).
pub fn cpu_engine(src: &ModelSource, quantization: Option<crate::fp8::Quantization>) -> Result<Engine<CpuBackend>> {
    let dir = match src {
        ModelSource::Checkpoint(dir) => dir.clone(),
        ModelSource::Preset(p, Family::Llada20) if p == "tiny" => crate::make_model::resolve_model(None)?,
        ModelSource::Preset(p, f) => bail!(
            "the CPU backend benchmarks checkpoints and the tiny preset (llada2.0); {p:?} of {} needs --device cuda, or a checkpoint from make-model --family",
            f.name()
        ),
    };
    let ck = Checkpoint::open(&dir)?;
    let tok = Tokenizer::open(&dir, &ck.config)?;
    // The backend's config: it says whether the experts are fp8 (the step floor counts by it).
    let b = CpuBackend::load_quantized(&ck, quantization)?;
    let cfg = b.cfg.clone();
    Ok(Engine::new(b, cfg, tok.mask_id, tok.eos_id))
}

/// The CPU twin of tensor parallelism: `size` ranks as threads over a checkpoint or tiny.
pub fn cpu_ranks_engine(
    src: &ModelSource,
    size: usize,
    quantization: Option<crate::fp8::Quantization>,
) -> Result<Engine<Ranks<CpuBackend>>> {
    let dir = match src {
        ModelSource::Checkpoint(dir) => dir.clone(),
        ModelSource::Preset(p, Family::Llada20) if p == "tiny" => crate::make_model::resolve_model(None)?,
        ModelSource::Preset(p, f) => bail!(
            "the CPU backend benchmarks checkpoints and the tiny preset (llada2.0); {p:?} of {} needs --device cuda, or a checkpoint from make-model --family",
            f.name()
        ),
    };
    let ck = Arc::new(Checkpoint::open(&dir)?);
    let tok = Tokenizer::open(&dir, &ck.config)?;
    Shard::check(&ck.config, size)?;
    let cfg = ck.config.clone().quantized(quantization);
    Ok(Engine::new(crate::runtime::cpu_ranks(&ck, size, quantization)?, cfg, tok.mask_id, tok.eos_id))
}

/// A preset's config, as `family` releases it, the random-weight engines draw it with, and its
/// mask and EOS ids.
fn preset_config(name: &str, family: Family) -> Result<(ModelConfig, u32, u32)> {
    let mut cfg = crate::make_model::family_config(crate::config::preset(name)?, family, name);
    if cfg.vocab_size == 0 {
        cfg.vocab_size = 512; // tiny's vocabulary is sized by its tokenizer; any size works here
    }
    let v = cfg.vocab_size as u32;
    let (mask, eos) = (cfg.mask_token_id.unwrap_or(v - 1), cfg.eos_token_id.unwrap_or(v - 2));
    Ok((cfg, mask, eos))
}

/// `size` CUDA ranks (GPUs 0..size): a checkpoint, or a preset's weights drawn on the devices
/// from `seed` (the same values a one-GPU engine draws).
#[cfg(dllm_cuda)]
pub fn cuda_ranks_engine(
    src: &ModelSource,
    seed: u64,
    size: usize,
    opts: &crate::backend::cuda::CudaOptions,
) -> Result<Engine<Ranks<crate::backend::cuda::CudaBackend>>> {
    use crate::backend::cuda::{tensor_parallel, WeightsFrom};
    match src {
        ModelSource::Checkpoint(dir) => {
            let ck = Arc::new(Checkpoint::open(dir)?);
            let tok = Tokenizer::open(dir, &ck.config)?;
            let cfg = ck.config.clone().quantized(opts.quantization);
            Ok(Engine::new(tensor_parallel(WeightsFrom::Checkpoint(ck), size, opts)?, cfg, tok.mask_id, tok.eos_id))
        }
        ModelSource::Preset(name, family) => {
            let (cfg, mask, eos) = preset_config(name, *family)?;
            let group = tensor_parallel(WeightsFrom::Random { cfg: Box::new(cfg.clone()), seed }, size, opts)?;
            Ok(Engine::new(group, cfg.quantized(opts.quantization), mask, eos))
        }
    }
}

/// One tensor-parallel rank's shapes standing alone on one GPU (`bench kernels --tp-size N`): a
/// preset's config as rank 0 of `size` holds it (its heads, its slices of every intermediate
/// width, its slice of the vocabulary), random weights, no collectives. Its kernels are the
/// rank's kernels; the all-reduces are not among them. Token ids come from the slice.
#[cfg(dllm_cuda)]
pub fn cuda_rank_alone_engine(
    src: &ModelSource,
    seed: u64,
    size: usize,
    opts: &crate::backend::cuda::CudaOptions,
) -> Result<Engine<crate::backend::cuda::CudaBackend>> {
    use crate::backend::cuda::CudaBackend;
    let ModelSource::Preset(name, family) = src else {
        anyhow::bail!("profiling one rank alone takes a preset (random weights), not a checkpoint")
    };
    let (whole, _, _) = preset_config(name, *family)?;
    crate::backend::shard::Shard::check(&whole, size)?;
    let cfg = super::rank_config(&whole, size);
    let v = cfg.vocab_size as u32;
    let b = CudaBackend::random(cfg, seed, opts)?;
    let cfg = b.cfg.clone();
    Ok(Engine::new(b, cfg, v - 1, v - 2))
}

/// The CUDA engine: a checkpoint, or a preset's weights drawn on the device from `seed`.
#[cfg(dllm_cuda)]
pub fn cuda_engine(
    src: &ModelSource,
    seed: u64,
    opts: &crate::backend::cuda::CudaOptions,
) -> Result<Engine<crate::backend::cuda::CudaBackend>> {
    use crate::backend::cuda::CudaBackend;
    match src {
        ModelSource::Checkpoint(dir) => {
            let ck = Checkpoint::open(dir)?;
            let tok = Tokenizer::open(dir, &ck.config)?;
            let b = CudaBackend::load(&ck, opts)?;
            let cfg = b.cfg.clone();
            Ok(Engine::new(b, cfg, tok.mask_id, tok.eos_id))
        }
        ModelSource::Preset(name, family) => {
            let (cfg, mask, eos) = preset_config(name, *family)?;
            let b = CudaBackend::random(cfg, seed, opts)?;
            let cfg = b.cfg.clone();
            Ok(Engine::new(b, cfg, mask, eos))
        }
    }
}
