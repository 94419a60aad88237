//! Weights on the device, bf16 (norm weights and the expert bias f32): uploaded from a
//! checkpoint, or made on the device with the init kernel for benchmark shapes. A
//! tensor-parallel rank holds its slices (`backend::shard` gives the rules) and reads or draws
//! nothing else: a random rank draws the whole tensor's values at its slice's indices, so TP2
//! runs the very weights TP1 does.
//! Experts of a layer are stored contiguously (`[E][n][k]`) so the grouped GEMMs index them
//! by expert id; the dense MLP's gate and up are stacked into one `[2I, H]` matrix (one GEMM).

use super::error::CudaError;
pub use super::fp8::ExpertMatrix;
use super::kernels::{params::InitParams, ptr, Kernel, Kernels};
use crate::backend::shard::Shard;
use crate::checkpoint::names::{self, Proj};
use crate::checkpoint::{expected_tensors, random_init, Checkpoint, Slice};
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
    /// This rank's rows of lm_head (token ids `Shard::vocab`); None when tied to the embedding
    /// and whole.
    pub lm_head: Option<CudaSlice<u16>>,
}

impl Weights {
    /// The rows the lm_head multiplies by: its own, or the embedding it is tied to.
    pub fn lm_head_rows(&self) -> &CudaSlice<u16> {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

/// Where the tensors come from: a checkpoint, or seeded random draws.
pub trait Source {
    /// The same `slice` of each of the bf16 tensor(s), stacked along the first dim into one buffer.
    fn bf16(&mut self, k: &Kernels, names: &[String], numel_each: usize, slice: &Slice) -> Result<CudaSlice<u16>>;
    fn f32(&mut self, k: &Kernels, name: &str, numel: usize) -> Result<CudaSlice<f32>>;
    /// The same `slice` (`[rows, cols]`) of each routed expert's matrix, stacked, as block fp8
    /// (backend/cuda/fp8.rs). A rank's slice starts at a multiple of its width, a multiple of
    /// 128 wherever fp8 shards (flash: 512 at TP2), so its blocks are the whole matrix's blocks.
    fn fp8(&mut self, k: &Kernels, names: &[String], rows: usize, cols: usize, slice: &Slice) -> Result<ExpertMatrix>;
}

/// A checkpoint's tensors, read from its shards and counted on a progress bar (cleared when
/// this is dropped, the upload done or failed).
pub struct FromCheckpoint<'a> {
    ck: &'a Checkpoint,
    bar: indicatif::ProgressBar,
    /// Ranks sharing the load (the bar counts this rank's share of the bytes).
    ranks: u64,
}

impl<'a> FromCheckpoint<'a> {
    pub fn new(ck: &'a Checkpoint, shard: Shard) -> Self {
        let ranks = shard.size as u64;
        let bar = if shard.rank == 0 {
            crate::progress::bytes(ck.weight_bytes() / ranks, "uploading weights to the GPU")
        } else {
            indicatif::ProgressBar::hidden() // one bar for the group: rank 0's
        };
        FromCheckpoint { ck, bar, ranks }
    }
}

impl Drop for FromCheckpoint<'_> {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl Source for FromCheckpoint<'_> {
    fn bf16(&mut self, k: &Kernels, names: &[String], numel_each: usize, slice: &Slice) -> Result<CudaSlice<u16>> {
        let mut buf = k.alloc::<u16>(names.len() * numel_each, &names[0])?;
        for (i, n) in names.iter().enumerate() {
            let bits = self.ck.bf16_bits_slice(n, slice)?;
            if bits.len() != numel_each {
                return Err(anyhow!("tensor {n} has {} elements in this rank's slice, expected {numel_each}", bits.len()));
            }
            let mut dst = buf.slice_mut(i * numel_each..(i + 1) * numel_each);
            k.stream.memcpy_htod(&bits, &mut dst).map_err(CudaError::driver(|| format!("uploading {n}")))?;
            self.bar.inc(self.ck.tensor_bytes(n) / self.ranks);
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
    fn fp8(&mut self, k: &Kernels, names: &[String], rows: usize, cols: usize, slice: &Slice) -> Result<ExpertMatrix> {
        let (ck, bar, ranks) = (self.ck, &self.bar, self.ranks);
        super::fp8::from_checkpoint(k, ck, names, rows, cols, slice, |n| {
            bar.inc((ck.tensor_bytes(n) + ck.tensor_bytes(&crate::fp8::scale_name(n))) / ranks)
        })
    }
}

/// Random weights drawn on the device, each tensor by `checkpoint::random_init` (the rule
/// `make-model` draws a checkpoint by).
pub struct Random<'a> {
    /// The whole model's config (a rank draws slices of its tensors).
    cfg: &'a ModelConfig,
    seed: u64,
    counter: u64,
    /// Each tensor's seed, by name: drawn again (a tied lm_head), it gets the same values.
    seeds: HashMap<String, u64>,
    /// Every tensor's shape (its input width gives the init scale).
    shapes: HashMap<String, Vec<usize>>,
}

impl<'a> Random<'a> {
    pub fn new(cfg: &'a ModelConfig, seed: u64) -> Self {
        Random { cfg, seed, counter: 0, seeds: HashMap::new(), shapes: expected_tensors(cfg).into_iter().collect() }
    }

    /// Tensor `name`'s draw seed: the n-th tensor drawn gets the n-th, in load order (the same
    /// order at every rank count).
    fn seed_of(&mut self, name: &str) -> u64 {
        if let Some(&s) = self.seeds.get(name) {
            return s;
        }
        self.counter += 1;
        let s = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.counter.wrapping_mul(0xD1B5_4A32_D192_ED03);
        self.seeds.insert(name.to_string(), s);
        s
    }
    fn stats(&self, name: &str) -> (f32, f32) {
        let shape = self.shapes.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let r = random_init(name, shape, self.cfg);
        (r.mean as f32, r.std as f32)
    }
    /// Draw `n` values of tensor `name` into `dst` (bf16 or f32); `at` places them in the whole
    /// tensor (see InitParams).
    fn fill(&mut self, k: &Kernels, name: &str, bf: Option<u64>, f: Option<u64>, n: usize, at: Placement) -> Result<()> {
        let seed = self.seed_of(name);
        let (mean, std) = self.stats(name);
        let p = InitParams {
            out_bf16: bf.unwrap_or(0),
            out_f32: f.unwrap_or(0),
            n_lo: n as u32,
            n_hi: (n as u64 >> 32) as u32,
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            mean,
            std,
            offset_lo: at.offset as u32,
            offset_hi: (at.offset as u64 >> 32) as u32,
            local_cols: at.local_cols as u32,
            global_cols: at.global_cols as u32,
            col0: at.col0 as u32,
        };
        Ok(k.launch_grid_stride(Kernel::InitNormal, n, &p)?)
    }
}

/// Where a drawn run of values lies in the whole tensor (InitParams' offset and column window).
#[derive(Default, Clone, Copy)]
struct Placement {
    offset: usize,
    local_cols: usize,
    global_cols: usize,
    col0: usize,
}

impl Random<'_> {
    /// Tensor `name`'s `slice` (`numel` values) into `dst`: the whole tensor's values at the
    /// slice's indices.
    fn draw(&mut self, k: &Kernels, name: &str, dst: u64, numel: usize, slice: &Slice) -> Result<()> {
        let cols = self.shapes.get(name).and_then(|s| s.last().copied()).unwrap_or(numel);
        match slice {
            Slice::Whole => self.fill(k, name, Some(dst), None, numel, Placement::default()),
            Slice::Rows(ranges) => {
                let mut done = 0;
                for r in ranges {
                    let at = Placement { offset: r.start * cols, ..Placement::default() };
                    self.fill(k, name, Some(dst + (done * 2) as u64), None, r.len() * cols, at)?;
                    done += r.len() * cols;
                }
                Ok(())
            }
            Slice::Cols(c) => {
                let at = Placement { local_cols: c.len(), global_cols: cols, col0: c.start, offset: 0 };
                self.fill(k, name, Some(dst), None, numel, at)
            }
        }
    }
}

impl Source for Random<'_> {
    fn bf16(&mut self, k: &Kernels, names: &[String], numel_each: usize, slice: &Slice) -> Result<CudaSlice<u16>> {
        let buf = k.alloc::<u16>(names.len() * numel_each, &names[0])?;
        let base = ptr(&buf, &k.stream);
        for (i, n) in names.iter().enumerate() {
            self.draw(k, n, base + (i * numel_each * 2) as u64, numel_each, slice)?;
        }
        Ok(buf)
    }
    fn f32(&mut self, k: &Kernels, name: &str, numel: usize) -> Result<CudaSlice<f32>> {
        let buf = k.alloc::<f32>(numel, name)?;
        self.fill(k, name, None, Some(ptr(&buf, &k.stream)), numel, Placement::default())?;
        Ok(buf)
    }
    /// The draws [`Source::bf16`] would make, quantized one matrix at a time.
    fn fp8(&mut self, k: &Kernels, names: &[String], rows: usize, cols: usize, slice: &Slice) -> Result<ExpertMatrix> {
        super::fp8::from_draws(k, &names[0], names.len(), rows, cols, |i, staging| self.draw(k, &names[i], staging, rows * cols, slice))
    }
}

/// A gated MLP whose matrices `name` spells, this rank's slice of `inter` (its whole width);
/// gate and up stacked.
fn dense_mlp(k: &Kernels, src: &mut dyn Source, at: &Sharding, name: impl Fn(Proj) -> String, inter: usize) -> Result<DenseMlp> {
    let (h, local) = (at.cfg.hidden_size, inter / at.shard.size);
    let (gate, down) = (name(Proj::Gate), name(Proj::Down));
    Ok(DenseMlp {
        inter: local,
        gate_up: src.bf16(k, &[gate.clone(), name(Proj::Up)], local * h, &at.slice(&gate))?,
        down: src.bf16(k, std::slice::from_ref(&down), h * local, &at.slice(&down))?,
    })
}

/// The whole model's config and this rank's place in it.
struct Sharding<'a> {
    cfg: &'a ModelConfig,
    shard: Shard,
}

impl Sharding<'_> {
    fn slice(&self, name: &str) -> Slice {
        self.shard.slice(self.cfg, name)
    }
}

/// Rank `shard`'s weights of the model `c` (the whole model's config).
pub fn load(k: &Kernels, c: &ModelConfig, shard: Shard, src: &mut dyn Source) -> Result<Weights> {
    let at = Sharding { cfg: c, shard };
    let local = shard.local_config(c);
    let (h, d) = (c.hidden_size, c.head_dim());
    let whole = Slice::Whole;
    let mut layers = vec![];
    for i in 0..c.num_hidden_layers {
        let l = names::layer(i);
        let ffn = if c.is_moe_layer(i) {
            let (e, m) = (c.num_experts, local.moe_intermediate_size);
            let experts = |p: Proj| (0..e).map(|x| l.expert(x, p)).collect::<Vec<_>>();
            // In this order: random weights draw each tensor from a counter.
            let router = src.bf16(k, &[l.router()], e * h, &whole)?;
            let bias = src.f32(k, &l.expert_bias(), e)?;
            let mut matrix = |p: Proj, rows: usize, cols: usize| -> Result<ExpertMatrix> {
                let (names, slice) = (experts(p), at.slice(&l.expert(0, p)));
                if c.fp8_experts() {
                    src.fp8(k, &names, rows, cols, &slice)
                } else {
                    Ok(ExpertMatrix::Bf16(src.bf16(k, &names, rows * cols, &slice)?))
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
                    Some(dense_mlp(k, src, &at, |p| l.shared_expert(p), c.shared_intermediate())?)
                } else {
                    None
                },
            })
        } else {
            Ffn::Dense(dense_mlp(k, src, &at, |p| l.mlp(p), c.intermediate_size)?)
        };
        layers.push(LayerWeights {
            input_norm: src.f32(k, &l.input_norm(), h)?,
            post_norm: src.f32(k, &l.post_norm(), h)?,
            qkv: src.bf16(k, &[l.qkv()], local.qkv_rows() * h, &at.slice(&l.qkv()))?,
            dense: src.bf16(k, &[l.dense()], h * local.num_attention_heads * d, &at.slice(&l.dense()))?,
            q_norm: src.f32(k, &l.q_norm(), d)?,
            k_norm: src.f32(k, &l.k_norm(), d)?,
            ffn,
        });
    }
    let vocab = shard.vocab(c.vocab_size).len();
    let lm_slice = at.slice(names::LM_HEAD);
    Ok(Weights {
        embed: src.bf16(k, &[names::EMBED.to_string()], c.vocab_size * h, &whole)?,
        final_norm: src.f32(k, names::FINAL_NORM, h)?,
        lm_head: match (c.tie_word_embeddings, shard.is_whole()) {
            (true, true) => None,
            (true, false) => Some(src.bf16(k, &[names::EMBED.to_string()], vocab * h, &lm_slice)?),
            (false, _) => Some(src.bf16(k, &[names::LM_HEAD.to_string()], vocab * h, &lm_slice)?),
        },
        layers,
    })
}
