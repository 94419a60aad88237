//! Weights on the device, bf16 (norm weights and the expert bias f32): uploaded from a
//! checkpoint, or made on the device with the init kernel for benchmark shapes.
//! Experts of a layer are stored contiguously (`[E][n][k]`) so the grouped GEMMs index them
//! by expert id; the dense MLP's gate and up are stacked into one `[2I, H]` matrix (one GEMM).

use super::error::CudaError;
use super::kernels::{params::InitParams, ptr, Kernel, Kernels};
use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use anyhow::{anyhow, Result};
use cudarc::driver::CudaSlice;

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
    /// `[E][Im][H]` each.
    pub gate: CudaSlice<u16>,
    pub up: CudaSlice<u16>,
    /// `[E][H][Im]`.
    pub down: CudaSlice<u16>,
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
}

pub struct FromCheckpoint<'a>(pub &'a Checkpoint);

impl Source for FromCheckpoint<'_> {
    fn bf16(&mut self, k: &Kernels, names: &[String], numel_each: usize) -> Result<CudaSlice<u16>> {
        let mut buf = k.alloc::<u16>(names.len() * numel_each, &names[0])?;
        for (i, n) in names.iter().enumerate() {
            let bits = self.0.tensor(n)?.to_bf16_bits();
            if bits.len() != numel_each {
                return Err(anyhow!("tensor {n} has {} elements, expected {numel_each}", bits.len()));
            }
            let mut dst = buf.slice_mut(i * numel_each..(i + 1) * numel_each);
            k.stream.memcpy_htod(&bits, &mut dst).map_err(CudaError::driver(|| format!("uploading {n}")))?;
        }
        Ok(buf)
    }
    fn f32(&mut self, k: &Kernels, name: &str, numel: usize) -> Result<CudaSlice<f32>> {
        let v = self.0.f32(name)?;
        if v.len() != numel {
            return Err(anyhow!("tensor {name} has {} elements, expected {numel}", v.len()));
        }
        Ok(k.stream.clone_htod(&v).map_err(|e| CudaError::upload(name, v.len() * 4, e))?)
    }
}

/// Random weights drawn on the device, with the statistics of make_model's `init_for`.
pub struct Random<'a> {
    pub cfg: &'a ModelConfig,
    pub seed: u64,
    pub counter: u64,
}

impl Random<'_> {
    fn stats(&self, name: &str, fan_in: usize) -> (f32, f32) {
        let h = self.cfg.hidden_size as f32;
        if name.ends_with("layernorm.weight") || name == "model.norm.weight" {
            (1.0, 0.1)
        } else if name.ends_with("expert_bias") {
            (0.0, 0.1)
        } else if name == "model.word_embeddings.weight" {
            (0.0, 1.0)
        } else if name == "lm_head.weight" {
            (0.0, 5.0 / h.sqrt())
        } else if name.ends_with("mlp.gate.weight") {
            (0.0, 2.0 / (fan_in as f32).sqrt())
        } else {
            (0.0, 1.0 / (fan_in as f32).sqrt())
        }
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
            let fan_in = fan_in_of(self.cfg, n);
            let (m, s) = self.stats(n, fan_in);
            self.fill(k, Some(base + (i * numel_each * 2) as u64), None, numel_each, m, s)?;
        }
        Ok(buf)
    }
    fn f32(&mut self, k: &Kernels, name: &str, numel: usize) -> Result<CudaSlice<f32>> {
        let buf = k.alloc::<f32>(numel, name)?;
        let (m, s) = self.stats(name, 1);
        self.fill(k, None, Some(ptr(&buf, &k.stream)), numel, m, s)?;
        Ok(buf)
    }
}

/// The input width of a weight matrix, from its name (the rows' length).
fn fan_in_of(c: &ModelConfig, name: &str) -> usize {
    if name.ends_with("down_proj.weight") {
        if name.contains("shared_experts") {
            c.shared_intermediate()
        } else if name.contains("experts") {
            c.moe_intermediate_size
        } else {
            c.intermediate_size
        }
    } else if name.ends_with("attention.dense.weight") {
        c.num_attention_heads * c.head_dim()
    } else {
        c.hidden_size
    }
}

fn dense_mlp(k: &Kernels, src: &mut dyn Source, p: &str, inter: usize, h: usize) -> Result<DenseMlp> {
    Ok(DenseMlp {
        inter,
        gate_up: src.bf16(k, &[format!("{p}.gate_proj.weight"), format!("{p}.up_proj.weight")], inter * h)?,
        down: src.bf16(k, &[format!("{p}.down_proj.weight")], h * inter)?,
    })
}

pub fn load(k: &Kernels, c: &ModelConfig, src: &mut dyn Source) -> Result<Weights> {
    let (h, d, v) = (c.hidden_size, c.head_dim(), c.vocab_size);
    let mut layers = vec![];
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let ffn = if c.is_moe_layer(i) {
            let (e, m) = (c.num_experts, c.moe_intermediate_size);
            let names = |w: &str| (0..e).map(|x| format!("{p}.mlp.experts.{x}.{w}.weight")).collect::<Vec<_>>();
            Ffn::Moe(MoeWeights {
                router: src.bf16(k, &[format!("{p}.mlp.gate.weight")], e * h)?,
                bias: src.f32(k, &format!("{p}.mlp.gate.expert_bias"), e)?,
                gate: src.bf16(k, &names("gate_proj"), m * h)?,
                up: src.bf16(k, &names("up_proj"), m * h)?,
                down: src.bf16(k, &names("down_proj"), h * m)?,
                shared: if c.num_shared_experts > 0 {
                    Some(dense_mlp(k, src, &format!("{p}.mlp.shared_experts"), c.shared_intermediate(), h)?)
                } else {
                    None
                },
            })
        } else {
            Ffn::Dense(dense_mlp(k, src, &format!("{p}.mlp"), c.intermediate_size, h)?)
        };
        layers.push(LayerWeights {
            input_norm: src.f32(k, &format!("{p}.input_layernorm.weight"), h)?,
            post_norm: src.f32(k, &format!("{p}.post_attention_layernorm.weight"), h)?,
            qkv: src.bf16(k, &[format!("{p}.attention.query_key_value.weight")], c.qkv_rows() * h)?,
            dense: src.bf16(k, &[format!("{p}.attention.dense.weight")], h * c.num_attention_heads * d)?,
            q_norm: src.f32(k, &format!("{p}.attention.query_layernorm.weight"), d)?,
            k_norm: src.f32(k, &format!("{p}.attention.key_layernorm.weight"), d)?,
            ffn,
        });
    }
    Ok(Weights {
        embed: src.bf16(k, &["model.word_embeddings.weight".to_string()], v * h)?,
        final_norm: src.f32(k, "model.norm.weight", h)?,
        lm_head: if c.tie_word_embeddings { None } else { Some(src.bf16(k, &["lm_head.weight".to_string()], v * h)?) },
        layers,
    })
}
