//! Choosing a backend and loading a model into it.

use crate::backend::cpu::CpuBackend;
use crate::backend::mem_group::MemGroup;
use crate::backend::ranks::Ranks;
use crate::backend::shard::Shard;
use crate::checkpoint::Checkpoint;
use crate::engine::{DynEngine, Engine};
use crate::tokenizer::Tokenizer;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// Tensor-parallel ranks (SGLang's `--tp-size`): the model sharded over this many GPUs of
    /// this host, one thread each (on the CPU: ranks as threads, the twin the tests check).
    pub tp_size: usize,
    pub load_format: LoadFormat,
    /// `--quantization fp8`: routed experts as block FP8 (a checkpoint that stores them so is
    /// FP8 without it).
    pub quantization: Option<crate::fp8::Quantization>,
    /// FP8 experts on Hopper GPUs: W8A8 (the activations quantized too, one scale a row and 128
    /// columns) where the experts average 8 rows or more (4 at 4096 wide), else W8A16 (the CUDA
    /// backend's `fp8_activations`; the CPU backend is W8A16 either way).
    pub fp8_activations: bool,
    /// Steps of up to this many requests run as CUDA graphs (0: none; SGLang's
    /// `--cuda-graph-max-bs`, `--disable-cuda-graph`).
    pub cuda_graph_max_bs: usize,
}

/// SGLang's `--load-format`: the checkpoint's safetensors, or random weights in the shapes its
/// config.json gives (profiling a model whose weights are not at hand, such as flash here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LoadFormat {
    #[default]
    Auto,
    Safetensors,
    /// Random weights drawn on the GPU(s) (seed 0); only config.json and the tokenizer are read.
    Dummy,
}

/// The load flags `dllm generate` and `dllm serve` share (SGLang's names); the device is each
/// command's own (serve checks it with its other flags).
#[derive(clap::Args, Debug, Clone)]
pub struct LoadFlags {
    /// The fraction of the GPU memory left after the weights that the KV cache takes, in (0, 1]
    /// (e.g. a small cache under compute-sanitizer). Default: the CUDA backend's.
    #[arg(long)]
    pub mem_fraction_static: Option<f32>,
    /// `fp8`: the routed experts as block FP8 (e4m3, one scale per 128x128 block), quantized on
    /// the GPU at load; a checkpoint that stores FP8 experts needs no flag.
    #[arg(long, value_enum)]
    pub quantization: Option<crate::fp8::Quantization>,
    /// With FP8 experts on a Hopper GPU: quantize the experts' activations too (W8A8, one scale
    /// a row and 128 columns, as SGLang's block-FP8 MoE does) where the experts average 8 rows or
    /// more (4 at 4096 wide: mini from batch 8, flash from 4). `false`: W8A16 at every batch, more
    /// accurate and slower.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fp8_activations: bool,
    /// Tensor parallelism: the model sharded over this many GPUs of this host, one thread each
    /// (with `--device cpu`: ranks as CPU threads, the tests' twin).
    #[arg(long, alias = "tensor-parallel-size", default_value_t = 1)]
    pub tp_size: usize,
    /// `auto`/`safetensors`: the checkpoint's weights; `dummy`: random weights on the GPU(s) in
    /// the shapes config.json gives (SGLang's profiling mode).
    #[arg(long, value_enum, default_value = "auto")]
    pub load_format: LoadFormat,
    #[command(flatten)]
    pub graphs: GraphFlags,
}

/// SGLang's CUDA-graph flags, shared by `generate`, `serve` and `bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct GraphFlags {
    /// Run every step's forward eagerly, without CUDA graphs (the GPU then idles between the
    /// step's ~20 launches a layer; for debugging and comparison).
    #[arg(long)]
    pub disable_cuda_graph: bool,
    /// Steps of up to this many requests are recorded as CUDA graphs (one per step shape) and
    /// replayed.
    #[arg(long, default_value_t = crate::backend::DEFAULT_CUDA_GRAPH_MAX_BS)]
    pub cuda_graph_max_bs: usize,
    /// SGLang's list of batch sizes to capture (`--cuda-graph-bs 1 2 4 8`). SGLang pads a batch
    /// to the next listed size and runs larger ones eagerly; dllm records each step shape at its
    /// own size on first use, so only the largest value counts: it takes the place of
    /// `--cuda-graph-max-bs` (as in SGLang, where it sets that flag to the list's largest).
    #[arg(long, num_args = 1.., value_name = "BS")]
    pub cuda_graph_bs: Option<Vec<usize>>,
}

impl GraphFlags {
    /// The most requests a graphed step may hold (0: none).
    pub fn max_bs(&self) -> usize {
        if self.disable_cuda_graph {
            return 0;
        }
        self.cuda_graph_bs.as_ref().and_then(|list| list.iter().copied().max()).unwrap_or(self.cuda_graph_max_bs)
    }
}

impl LoadFlags {
    pub fn options(&self, device: Device) -> LoadOptions {
        LoadOptions {
            device,
            mem_fraction_static: self.mem_fraction_static,
            tp_size: self.tp_size,
            load_format: self.load_format,
            quantization: self.quantization,
            fp8_activations: self.fp8_activations,
            cuda_graph_max_bs: self.graphs.max_bs(),
        }
    }
}

impl LoadOptions {
    pub fn on(device: Device) -> Self {
        LoadOptions {
            device,
            mem_fraction_static: None,
            tp_size: 1,
            load_format: LoadFormat::Auto,
            quantization: None,
            fp8_activations: true,
            cuda_graph_max_bs: crate::backend::DEFAULT_CUDA_GRAPH_MAX_BS,
        }
    }
}

/// Load a checkpoint into an engine on `device` with the default options.
pub fn load(model_dir: &Path, device: Device) -> Result<Loaded> {
    load_with(model_dir, &LoadOptions::on(device))
}

pub fn load_with(model_dir: &Path, opts: &LoadOptions) -> Result<Loaded> {
    if opts.load_format == LoadFormat::Dummy {
        return load_dummy(model_dir, opts);
    }
    let ck = Arc::new(Checkpoint::open(model_dir)?);
    Shard::check(&ck.config, opts.tp_size)?;
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

/// `--load-format dummy`: the model directory's config.json and tokenizer, random weights on the
/// GPU(s).
fn load_dummy(model_dir: &Path, opts: &LoadOptions) -> Result<Loaded> {
    let cfg = crate::config::ModelConfig::from_file(&model_dir.join("config.json"))?;
    Shard::check(&cfg, opts.tp_size)?;
    let tokenizer = Tokenizer::open(model_dir, &cfg)?;
    if opts.device == Device::Cpu {
        anyhow::bail!("--load-format dummy draws random weights on the GPU; use --device cuda (or auto)");
    }
    let engine = dummy_cuda_engine(cfg.quantized(opts.quantization), tokenizer.mask_id, tokenizer.eos_id, opts)?;
    Ok(Loaded { engine, tokenizer, model_dir: model_dir.to_path_buf() })
}

#[cfg(dllm_cuda)]
fn dummy_cuda_engine(cfg: crate::config::ModelConfig, mask: u32, eos: u32, opts: &LoadOptions) -> Result<Box<dyn DynEngine>> {
    use crate::backend::cuda::{tensor_parallel, CudaBackend, WeightsFrom};
    let cuda = cuda_options(opts);
    if opts.tp_size == 1 {
        return Ok(Box::new(Engine::new(CudaBackend::random(cfg.clone(), 0, &cuda)?, cfg, mask, eos)));
    }
    let ranks = tensor_parallel(WeightsFrom::Random { cfg: Box::new(cfg.clone()), seed: 0 }, opts.tp_size, &cuda)?;
    Ok(Box::new(Engine::new(ranks, cfg, mask, eos)))
}

#[cfg(not(dllm_cuda))]
fn dummy_cuda_engine(_cfg: crate::config::ModelConfig, _mask: u32, _eos: u32, _opts: &LoadOptions) -> Result<Box<dyn DynEngine>> {
    anyhow::bail!("--load-format dummy needs the CUDA backend, and this dllm was built without CUDA kernels")
}

/// The CUDA backend's options from the load options.
#[cfg(dllm_cuda)]
fn cuda_options(opts: &LoadOptions) -> crate::backend::cuda::CudaOptions {
    let mut cuda = crate::backend::cuda::CudaOptions::default();
    if let Some(f) = opts.mem_fraction_static {
        cuda.mem_fraction_static = f;
    }
    cuda.quantization = opts.quantization;
    cuda.fp8_activations = opts.fp8_activations;
    cuda.cuda_graph_max_bs = opts.cuda_graph_max_bs;
    cuda
}

/// The CPU engine; at `tp_size` > 1 the CPU twin of tensor parallelism (ranks as threads
/// meeting in memory), which computes what the GPU ranks compute.
pub fn cpu_engine(ck: &Arc<Checkpoint>, mask: u32, eos: u32, opts: &LoadOptions) -> Result<Box<dyn DynEngine>> {
    let cfg = ck.config.clone().quantized(opts.quantization);
    if opts.tp_size == 1 {
        return Ok(Box::new(Engine::new(CpuBackend::load_quantized(ck, opts.quantization)?, cfg, mask, eos)));
    }
    Ok(Box::new(Engine::new(cpu_ranks(ck, opts.tp_size, opts.quantization)?, cfg, mask, eos)))
}

/// `size` CPU ranks of the checkpoint, as threads.
pub fn cpu_ranks(ck: &Arc<Checkpoint>, size: usize, quantization: Option<crate::fp8::Quantization>) -> Result<Ranks<CpuBackend>> {
    let (ck, group) = (ck.clone(), MemGroup::new(size));
    let g = group.clone();
    let make = move |rank| CpuBackend::load_rank(&ck, Shard { rank, size }, Some(g.clone()), quantization);
    Ok(Ranks::spawn(size, make)?.with_abort(move || group.abort()))
}

/// CUDA devices this process could use (0 when built without kernels or without a driver).
pub fn gpu_count() -> usize {
    #[cfg(dllm_cuda)]
    return crate::backend::cuda::device_count();
    #[cfg(not(dllm_cuda))]
    0
}

#[cfg(dllm_cuda)]
fn cuda_engine(ck: &Arc<Checkpoint>, mask: u32, eos: u32, opts: &LoadOptions) -> Result<Box<dyn DynEngine>> {
    let cuda = cuda_options(opts);
    if opts.tp_size == 1 {
        let b = crate::backend::cuda::CudaBackend::load(ck, &cuda)?;
        return Ok(Box::new(Engine::new(b, ck.config.clone().quantized(opts.quantization), mask, eos)));
    }
    let ranks = crate::backend::cuda::tensor_parallel(crate::backend::cuda::WeightsFrom::Checkpoint(ck.clone()), opts.tp_size, &cuda)?;
    Ok(Box::new(Engine::new(ranks, ck.config.clone().quantized(opts.quantization), mask, eos)))
}

#[cfg(not(dllm_cuda))]
fn cuda_engine(_ck: &Arc<Checkpoint>, _mask: u32, _eos: u32, _opts: &LoadOptions) -> Result<Box<dyn DynEngine>> {
    anyhow::bail!("this dllm was built without CUDA kernels (nvcc was not found at build time; run tools/setup-cuda.sh and rebuild)")
}
