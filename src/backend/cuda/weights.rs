//! Weights on the device, bf16 (norm weights and the expert bias f32): uploaded from a
//! checkpoint, or made on the device with the init kernel for benchmark shapes.
//! Experts of a layer are stored contiguously (`[E][n][k]`) so the grouped GEMMs index them
//! by expert id; the dense MLP's gate and up are stacked into one `[2I, H]` matrix (one GEMM).

use super::error::CudaError;
pub use super::fp8::ExpertMatrix;
use super::kernels::{params::InitParams, ptr, Kernel, Kernels};
use crate::checkpoint::names::{self, Proj};
use crate::checkpoint::{expected_tensors, random_init, Checkpoint};
use crate::config::ModelConfig;
use anyhow::{anyhow, Result};
use cudarc::driver::CudaSlice;
use std::collections::HashMap;

pub struct DenseMlp {
    pub inter: usize,
    /// `[2 * inter, H]`: gate rows then up rows.
    pub gate_up: CudaSlice<u16>,
    /// `[H, inter]`.
    pub down: CudaSlice<u16>,
}

pub struct MoeWeights {
    pub router: CudaSlice<u16>,
    pub bias: CudaSlice<f32>,
    /// `[E][Im][H]` each (bf16, or block fp8 under `--quantization fp8`).
    pub gate: ExpertMatrix,
    pub up: ExpertMatrix,
    /// `[E][H][Im]`.
    pub down: ExpertMatrix,
    pub shared: Option<DenseMlp>,
}

// One per layer, built once and never moved on a hot path: boxing the MoE variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Ffn {
    Dense(DenseMlp),
    Moe(MoeWeights),
}

pub struct LayerWeights {
    pub input_norm: CudaSlice<f32>,
    pub post_norm: CudaSlice<f32>,
    pub qkv: CudaSlice<u16>,
    pub dense: CudaSlice<u16>,
    pub q_norm: CudaSlice<f32>,
    pub k_norm: CudaSlice<f32>,
    pub ffn: Ffn,
}

pub struct Weights {
    pub embed: CudaSlice<u16>,
    pub layers: Vec<LayerWeights>,
    pub final_norm: CudaSlice<f32>,
    /// None when tied to the embedding.
    pub lm_head: Option<CudaSlice<u16>>,
}

/// Where the tensors come from: a checkpoint, or seeded random draws.
pub trait Source {
    /// bf16 tensor(s) stacked along the first dim into one buffer.
    fn bf16(&mut self, k: &Kernels, names: &[String], numel_each: usize) -> Result<CudaSlice<u16>>;
    fn f32(&mut self, k: &Kernels, name: &str, numel: usize) -> Result<CudaSlice<f32>>;
    /// Routed experts' matrices `[rows, cols]` each, stacked, as block fp8 (backend/cuda/fp8.rs).
    fn fp8(&mut self, k: &Kernels, names: &[String], rows: usize, cols: usize) -> Result<ExpertMatrix>;
}

/// A checkpoint's tensors, read from its shards and counted on a progress bar (cleared when
/// this is dropped, the upload done or failed).
pub struct FromCheckpoint<'a> {
    ck: &'a Checkpoint,
    bar: indicatif::ProgressBar,
}

impl<'a> FromCheckpoint<'a> {
    pub fn new(ck: &'a Checkpoint) -> Self {
        FromCheckpoint { ck, bar: crate::progress::bytes(ck.weight_bytes(), "uploading weights to the GPU") }
    }
}

impl Drop for FromCheckpoint<'_> {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl Source for FromCheckpoint<'_> {
    fn bf16(&mut self, k: &Kernels, names: &[String], numel_each: usize) -> Result<CudaSlice<u16>> {
        let mut buf = k.alloc::<u16>(names.len() * numel_each, &names[0])?;
        for (i, n) in names.iter().enumerate() {
            let bits = self.ck.bf16_bits(n)?;
            if bits.len() != numel_each {
                return Err(anyhow!("tensor {n} has {} elements, expected {numel_each}", bits.len()));
            }
            let mut dst = buf.slice_mut(i * numel_each..(i + 1) * numel_each);
            k.stream.memcpy_htod(&bits, &mut dst).map_err(CudaError::driver(|| format!("uploading {n}")))?;
            self.bar.inc(self.ck.tensor_bytes(n));
        }
        Ok(buf)
    }
    fn f32(&mut self, k: &Kernels, name: &str, numel: usize) -> Result<CudaSlice<f32>> {
        let v = self.ck.f32(name)?;
        if v.len() != numel {
            return Err(anyhow!("tensor {name} has {} elements, expected {numel}", v.len()));
        }
        self.bar.inc(self.ck.tensor_bytes(name));
        Ok(k.stream.clone_htod(&v).map_err(|e| CudaError::upload(name, v.len() * 4, e))?)
    }
    fn fp8(&mut self, k: &Kernels, names: &[String], rows: usize, cols: usize) -> Result<ExpertMatrix> {
        let (ck, bar) = (self.ck, &self.bar);
        super::fp8::from_checkpoint(k, ck, names, rows, cols, |n| bar.inc(ck.tensor_bytes(n) + ck.tensor_bytes(&crate::fp8::scale_name(n))))
    }
}

/// Random weights drawn on the device, each tensor by `checkpoint::random_init` (the rule
/// `make-model` draws a checkpoint by).
pub struct Random<'a> {
    cfg: &'a ModelConfig,
    seed: u64,
    counter: u64,
    /// Every tensor's shape (its input width gives the init scale).
    shapes: HashMap<String, Vec<usize>>,
}

impl<'a> Random<'a> {
    pub fn new(cfg: &'a ModelConfig, seed: u64) -> Self {
        Random { cfg, seed, counter: 0, shapes: expected_tensors(cfg).into_iter().collect() }
    }
    fn stats(&self, name: &str) -> (f32, f32) {
        let shape = self.shapes.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let r = random_init(name, shape, self.cfg);
        (r.mean as f32, r.std as f32)
    }
    fn fill(&mut self, k: &Kernels, bf: Option<u64>, f: Option<u64>, n: usize, mean: f32, std: f32) -> Result<()> {
        self.counter += 1;
        let seed = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.counter.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let p = InitParams {
            out_bf16: bf.unwrap_or(0),
            out_f32: f.unwrap_or(0),
            n_lo: n as u32,
            n_hi: (n as u64 >> 32) as u32,
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            mean,
            std,
        };
        Ok(k.launch(Kernel::InitNormal, (n.div_ceil(256).min(65536) as u32, 1, 1), 256, &p)?)
    }
}

impl Source for Random<'_> {
    fn bf16(&mut self, k: &Kernels, names: &[String], numel_each: usize) -> Result<CudaSlice<u16>> {
        let buf = k.alloc::<u16>(names.len() * numel_each, &names[0])?;
        let base = ptr(&buf, &k.stream);
        // One draw per stacked tensor; they share statistics except the dense gate/up pair,
        // which also share them.
        for (i, n) in names.iter().enumerate() {
            let (m, s) = self.stats(n);
            self.fill(k, Some(base + (i * numel_each * 2) as u64), None, numel_each, m, s)?;
        }
        Ok(buf)
    }
    fn f32(&mut self, k: &Kernels, name: &str, numel: usize) -> Result<CudaSlice<f32>> {
        let buf = k.alloc::<f32>(numel, name)?;
        let (m, s) = self.stats(name);
        self.fill(k, None, Some(ptr(&buf, &k.stream)), numel, m, s)?;
        Ok(buf)
    }
    /// The draws [`Source::bf16`] would make, quantized one matrix at a time.
    fn fp8(&mut self, k: &Kernels, names: &[String], rows: usize, cols: usize) -> Result<ExpertMatrix> {
        let stats: Vec<(f32, f32)> = names.iter().map(|n| self.stats(n)).collect();
        super::fp8::from_draws(k, &names[0], names.len(), rows, cols, |i, staging| {
            self.fill(k, Some(staging), None, rows * cols, stats[i].0, stats[i].1)
        })
    }
}

/// A gated MLP whose matrices `name` spells; gate and up stacked.
fn dense_mlp(k: &Kernels, src: &mut dyn Source, name: impl Fn(Proj) -> String, inter: usize, h: usize) -> Result<DenseMlp> {
    Ok(DenseMlp {
        inter,
        gate_up: src.bf16(k, &[name(Proj::Gate), name(Proj::Up)], inter * h)?,
        down: src.bf16(k, &[name(Proj::Down)], h * inter)?,
    })
}

pub fn load(k: &Kernels, c: &ModelConfig, src: &mut dyn Source) -> Result<Weights> {
    let (h, d, v) = (c.hidden_size, c.head_dim(), c.vocab_size);
    let mut layers = vec![];
    for i in 0..c.num_hidden_layers {
        let l = names::layer(i);
        let ffn = if c.is_moe_layer(i) {
            let (e, m) = (c.num_experts, c.moe_intermediate_size);
            let experts = |p: Proj| (0..e).map(|x| l.expert(x, p)).collect::<Vec<_>>();
            // In this order: random weights draw each tensor from a counter.
            let router = src.bf16(k, &[l.router()], e * h)?;
            let bias = src.f32(k, &l.expert_bias(), e)?;
            let mut matrix = |p: Proj, rows: usize, cols: usize| -> Result<ExpertMatrix> {
                if c.fp8_experts() {
                    src.fp8(k, &experts(p), rows, cols)
                } else {
                    Ok(ExpertMatrix::Bf16(src.bf16(k, &experts(p), rows * cols)?))
                }
            };
            let (gate, up, down) = (matrix(Proj::Gate, m, h)?, matrix(Proj::Up, m, h)?, matrix(Proj::Down, h, m)?);
            Ffn::Moe(MoeWeights {
                router,
                bias,
                gate,
                up,
                down,
                shared: if c.num_shared_experts > 0 {
                    Some(dense_mlp(k, src, |p| l.shared_expert(p), c.shared_intermediate(), h)?)
                } else {
                    None
                },
            })
        } else {
            Ffn::Dense(dense_mlp(k, src, |p| l.mlp(p), c.intermediate_size, h)?)
        };
        layers.push(LayerWeights {
            input_norm: src.f32(k, &l.input_norm(), h)?,
            post_norm: src.f32(k, &l.post_norm(), h)?,
            qkv: src.bf16(k, &[l.qkv()], c.qkv_rows() * h)?,
            dense: src.bf16(k, &[l.dense()], h * c.num_attention_heads * d)?,
            q_norm: src.f32(k, &l.q_norm(), d)?,
            k_norm: src.f32(k, &l.k_norm(), d)?,
            ffn,
        });
    }
    Ok(Weights {
        embed: src.bf16(k, &[names::EMBED.to_string()], v * h)?,
        final_norm: src.f32(k, names::FINAL_NORM, h)?,
        lm_head: if c.tie_word_embeddings { None } else { Some(src.bf16(k, &[names::LM_HEAD.to_string()], v * h)?) },
        layers,
    })
}
