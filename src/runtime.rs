//! Choosing a backend, loading a model into it, and the embedded default model.

use crate::backend::cpu::CpuBackend;
use crate::checkpoint::Checkpoint;
use crate::engine::{DynEngine, Engine};
use crate::tokenizer::Tokenizer;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
    Auto,
}

/// Where the embedded default (the tiny model, seed 0) lives once made.
pub fn default_model_dir() -> PathBuf {
    let base = std::env::var_os("DLLM_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("dllm")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache").join("dllm")))
        .unwrap_or_else(|| std::env::temp_dir().join("dllm"));
    base.join(format!("tiny-seed0-v{}", env!("CARGO_PKG_VERSION")))
}

/// The model directory to use: the given one, or the tiny default, made on first use.
pub fn resolve_model(path: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = path {
        return Ok(p.to_path_buf());
    }
    let dir = default_model_dir();
    if !dir.join("config.json").exists() {
        let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
        crate::make_model::make_model("tiny", &tmp, 0).context("making the default tiny model")?;
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Another process may have won the race; either copy is the same model.
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        eprintln!("made the default tiny model in {}", dir.display());
    }
    Ok(dir)
}

pub struct Loaded {
    pub engine: Box<dyn DynEngine>,
    pub tokenizer: Tokenizer,
    pub model_dir: PathBuf,
}

pub fn load(model_dir: &Path, device: Device) -> Result<Loaded> {
    let ck = Checkpoint::open(model_dir)?;
    let tokenizer = Tokenizer::open(model_dir, &ck.config)?;
    let (mask, eos) = (tokenizer.mask_id, tokenizer.eos_id);
    let engine: Box<dyn DynEngine> = match device {
        Device::Cpu => Box::new(Engine::new(CpuBackend::load(&ck)?, ck.config.clone(), mask, eos)),
        Device::Cuda => cuda_engine(&ck, mask, eos)?,
        Device::Auto => match cuda_engine(&ck, mask, eos) {
            Ok(e) => e,
            Err(err) => {
                eprintln!("no usable GPU ({err:#}); using the CPU backend");
                Box::new(Engine::new(CpuBackend::load(&ck)?, ck.config.clone(), mask, eos))
            }
        },
    };
    Ok(Loaded { engine, tokenizer, model_dir: model_dir.to_path_buf() })
}

/// CUDA devices this process could use (0 when built without kernels or without a driver).
pub fn gpu_count() -> usize {
    #[cfg(dllm_cuda)]
    return crate::backend::cuda::device_count();
    #[cfg(not(dllm_cuda))]
    0
}

#[cfg(dllm_cuda)]
fn cuda_engine(ck: &Checkpoint, mask: u32, eos: u32) -> Result<Box<dyn DynEngine>> {
    let b = crate::backend::cuda::CudaBackend::load(ck, &crate::backend::cuda::CudaOptions::default())?;
    Ok(Box::new(Engine::new(b, ck.config.clone(), mask, eos)))
}

#[cfg(not(dllm_cuda))]
fn cuda_engine(_ck: &Checkpoint, _mask: u32, _eos: u32) -> Result<Box<dyn DynEngine>> {
    anyhow::bail!("this dllm was built without CUDA kernels (nvcc was not found at build time; run tools/setup-cuda.sh and rebuild)")
}
