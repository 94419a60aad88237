//! Choosing a backend and loading a model into it.

use crate::backend::cpu::CpuBackend;
use crate::checkpoint::Checkpoint;
use crate::engine::{DynEngine, Engine};
use crate::tokenizer::Tokenizer;
use anyhow::Result;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
    Auto,
}

pub struct Loaded {
    pub engine: Box<dyn DynEngine>,
    pub tokenizer: Tokenizer,
    pub model_dir: PathBuf,
}

/// How to load a model: the device, and the CUDA backend's knobs as values (never through the
/// environment).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    pub device: Device,
    /// The fraction of the device memory left after the weights that the KV cache takes
    /// (SGLang's `--mem-fraction-static`); None: the backend's default.
    pub mem_fraction_static: Option<f32>,
    /// `--quantization fp8`: routed experts as block FP8 (a checkpoint that stores them so is
    /// FP8 without it).
    pub quantization: Option<crate::fp8::Quantization>,
}

impl LoadOptions {
    pub fn on(device: Device) -> Self {
        LoadOptions { device, mem_fraction_static: None, quantization: None }
    }
}

/// Load a checkpoint into an engine on `device` with the default options.
pub fn load(model_dir: &Path, device: Device) -> Result<Loaded> {
    load_with(model_dir, &LoadOptions::on(device))
}

pub fn load_with(model_dir: &Path, opts: &LoadOptions) -> Result<Loaded> {
    let ck = Checkpoint::open(model_dir)?;
    let tokenizer = Tokenizer::open(model_dir, &ck.config)?;
    let (mask, eos) = (tokenizer.mask_id, tokenizer.eos_id);
    let engine: Box<dyn DynEngine> = match opts.device {
        Device::Cpu => cpu_engine(&ck, mask, eos, opts)?,
        Device::Cuda => cuda_engine(&ck, mask, eos, opts)?,
        Device::Auto => match cuda_engine(&ck, mask, eos, opts) {
            Ok(e) => e,
            Err(err) => {
                eprintln!("no usable GPU ({err:#}); using the CPU backend");
                cpu_engine(&ck, mask, eos, opts)?
            }
        },
    };
    Ok(Loaded { engine, tokenizer, model_dir: model_dir.to_path_buf() })
}

fn cpu_engine(ck: &Checkpoint, mask: u32, eos: u32, opts: &LoadOptions) -> Result<Box<dyn DynEngine>> {
    let b = CpuBackend::load_quantized(ck, opts.quantization)?;
    let cfg = b.cfg.clone();
    Ok(Box::new(Engine::new(b, cfg, mask, eos)))
}

/// CUDA devices this process could use (0 when built without kernels or without a driver).
pub fn gpu_count() -> usize {
    #[cfg(dllm_cuda)]
    return crate::backend::cuda::device_count();
    #[cfg(not(dllm_cuda))]
    0
}

#[cfg(dllm_cuda)]
fn cuda_engine(ck: &Checkpoint, mask: u32, eos: u32, opts: &LoadOptions) -> Result<Box<dyn DynEngine>> {
    let mut cuda = crate::backend::cuda::CudaOptions::default();
    if let Some(f) = opts.mem_fraction_static {
        cuda.mem_fraction_static = f;
    }
    cuda.quantization = opts.quantization;
    let b = crate::backend::cuda::CudaBackend::load(ck, &cuda)?;
    let cfg = b.cfg.clone();
    Ok(Box::new(Engine::new(b, cfg, mask, eos)))
}

#[cfg(not(dllm_cuda))]
fn cuda_engine(_ck: &Checkpoint, _mask: u32, _eos: u32, _opts: &LoadOptions) -> Result<Box<dyn DynEngine>> {
    anyhow::bail!("this dllm was built without CUDA kernels (nvcc was not found at build time; run tools/setup-cuda.sh and rebuild)")
}
