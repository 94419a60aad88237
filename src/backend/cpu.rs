//! The reference backend: f32 math on the checkpoint's weights, plain loops + rayon.
//! Each function here is the CPU twin of a CUDA kernel and is what that kernel is tested against.

use super::mem_group::MemGroup;
use super::shard::Shard;
use super::{Backend, BlockPool, ExpertMath, Head, LayerRouting, Linear, Measure, Norm, StepBatch};
use crate::checkpoint::names::{self, Proj};
use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::decode::row_top::{row_top, RowTop};
use crate::decode::sample::{combine_pick_shares, partial_pick, pick_row, RowDraw};
use crate::decode::Pick;
use anyhow::{bail, Result};
use rayon::prelude::*;
use std::sync::Arc;

/// Row-major `[rows, cols]` f32 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Mat {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Mat { rows, cols, data: vec![0.0; rows * cols] }
    }
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// A weight matrix `[out, in]` (y = x W^T).
pub struct Weight {
    pub out: usize,
    pub inp: usize,
    pub w: Vec<f32>,
}

struct Mlp {
    gate: Weight,
    up: Weight,
    down: Weight,
}

struct Moe {
    router: Weight,
    bias: Vec<f32>,
    experts: Vec<Mlp>,
    shared: Option<Mlp>,
}

enum Ffn {
    Dense(Mlp),
    Moe(Moe),
}

struct Layer {
    input_norm: Vec<f32>,
    post_norm: Vec<f32>,
    qkv: Weight,
    dense: Weight,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    ffn: Ffn,
}

struct SeqCache {
    max_len: usize,
    /// Per layer `[max_len, NKV, D]`.
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

pub struct CpuBackend {
    /// This rank's view: its heads and intermediate widths (the whole model at one rank).
    pub cfg: ModelConfig,
    embed: Weight,
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    /// This rank's rows of lm_head: token ids `shard.vocab(cfg.vocab_size)` (the config's
    /// vocabulary is the whole one at every rank).
    lm_head: Weight,
    shard: Shard,
    /// The ranks' meeting point (None at one rank).
    group: Option<Arc<MemGroup>>,
    slots: Vec<Option<SeqCache>>,
    /// The most positions one sequence's KV may take (see [`CpuBackend::load`]).
    max_seq_len: usize,
    /// Distinct experts per MoE layer of the current forward, when counting.
    touched: Option<Vec<usize>>,
    /// The MoE layers' routing decisions of the current forward, when recording.
    routing: Option<Vec<LayerRouting>>,
    /// What the last `head` produced, until it is read.
    head_out: Option<HeadOut>,
    /// The next `Head::Sample`'s draws.
    draws: Vec<RowDraw>,
    /// The routed experts' inputs (x, and the act rows rounded to bf16) quantized to e4m3 per row
    /// and 128 columns and dequantized before their GEMMs: the twin of the CUDA W8A8 tiles
    /// (`CudaOptions::fp8_activations`), set by [`CpuBackend::set_fp8_activations`].
    fp8_activations: bool,
}

/// The lm_head's results of one forward.
enum HeadOut {
    Picks(Vec<Pick>),
    Logits(Vec<f32>),
    /// Each row's summary, and the whole rows `[rows, vocab]` for `read_logit_rows`.
    Tops {
        tops: Vec<RowTop>,
        logits: Vec<f32>,
    },
}

/// Reads a rank's slices of the checkpoint's tensors as f32, counting their bytes on a
/// progress bar.
struct Reader<'a> {
    ck: &'a Checkpoint,
    shard: Shard,
    bar: indicatif::ProgressBar,
    /// `--quantization fp8` over bf16 experts: round them through block FP8 (fp8.rs), so the
    /// CPU computes with the weights the GPU's fp8 GEMMs do. Stored fp8 experts need nothing:
    /// `Checkpoint::f32` dequantizes them.
    fp8_round_trip: bool,
}

impl Reader<'_> {
    fn f32(&self, name: &str) -> Result<Vec<f32>> {
        self.f32_as(name, name)
    }

    /// Tensor `name` sliced by the rule for `rule` (a tied lm_head is the embedding's rows).
    fn f32_as(&self, name: &str, rule: &str) -> Result<Vec<f32>> {
        let v = self.ck.f32_slice(name, &self.shard.slice(&self.ck.config, rule))?;
        self.bar.inc(self.ck.tensor_bytes(name) / self.shard.size as u64);
        Ok(v)
    }

    fn weight(&self, name: &str) -> Result<Weight> {
        self.weight_as(name, name)
    }

    fn weight_as(&self, name: &str, rule: &str) -> Result<Weight> {
        let t = self.ck.tensor(name)?;
        let shape = self.shard.slice(&self.ck.config, rule).shape(name, t.shape)?;
        let (out, inp) = (shape[0], shape[1]);
        Ok(Weight { out, inp, w: self.f32_as(name, rule)? })
    }

    /// A routed expert's MLP: block FP8 where quantizing (see `fp8_round_trip`).
    fn expert_mlp(&self, name: impl Fn(Proj) -> String) -> Result<Mlp> {
        let mut m = self.mlp(name)?;
        if self.fp8_round_trip {
            for w in [&mut m.gate, &mut m.up, &mut m.down] {
                w.w = crate::fp8::round_trip(&w.w, w.out, w.inp)?;
            }
        }
        Ok(m)
    }

    /// A gated MLP whose matrices `name` spells.
    fn mlp(&self, name: impl Fn(Proj) -> String) -> Result<Mlp> {
        Ok(Mlp { gate: self.weight(&name(Proj::Gate))?, up: self.weight(&name(Proj::Up))?, down: self.weight(&name(Proj::Down))? })
    }
}

impl CpuBackend {
    pub fn load(ck: &Checkpoint) -> Result<Self> {
        Self::load_rank(ck, Shard::WHOLE, None, None)
    }

    /// [`CpuBackend::load`] with `--quantization`: `Some(Fp8)` rounds bf16 routed experts through
    /// block FP8 (stored fp8 experts are dequantized either way).
    pub fn load_quantized(ck: &Checkpoint, quantization: Option<crate::fp8::Quantization>) -> Result<Self> {
        Self::load_rank(ck, Shard::WHOLE, None, quantization)
    }

    /// Rank `shard.rank` of a tensor-parallel group meeting in `group`: its slices of the
    /// weights (`backend::shard`'s rules), its heads' KV. Under `--quantization fp8` a rank
    /// rounds its slices through block FP8, as a GPU rank quantizes its slices.
    pub fn load_rank(
        ck: &Checkpoint,
        shard: Shard,
        group: Option<Arc<MemGroup>>,
        quantization: Option<crate::fp8::Quantization>,
    ) -> Result<Self> {
        Shard::check(&ck.config, shard.size)?;
        if group.as_ref().map_or(1, |g| g.size()) != shard.size {
            bail!("rank {} of {}: the group has a different size", shard.rank, shard.size);
        }
        let whole = ck.config.clone().quantized(quantization);
        let cfg = shard.local_config(&whole);
        let params: usize =
            crate::checkpoint::expected_tensors(&whole).iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>() / shard.size;
        // The CPU backend keeps an f32 copy: refuse sizes that cannot fit rather than thrash.
        let need = params * 4;
        if let Some(avail) = available_memory() {
            if need > avail {
                bail!(
                    "the CPU backend needs {:.1} GiB for this model's f32 weights but only {:.1} GiB is available; use --device cuda",
                    need as f64 / (1u64 << 30) as f64,
                    avail as f64 / (1u64 << 30) as f64
                );
            }
        }
        // A tied lm_head is a second f32 copy of the embedding, read twice.
        let tied = if cfg.tie_word_embeddings { ck.tensor_bytes(names::EMBED) } else { 0 };
        let fp8_round_trip = cfg.fp8_experts() && !ck.config.fp8_experts();
        let bar = crate::progress::bytes((ck.weight_bytes() + tied) / shard.size as u64, "loading weights");
        let r = Reader { ck, shard, bar, fp8_round_trip };
        let mut layers = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let l = names::layer(i);
            let ffn = if cfg.is_moe_layer(i) {
                let experts = (0..cfg.num_experts).into_par_iter().map(|x| r.expert_mlp(|p| l.expert(x, p))).collect::<Result<Vec<_>>>()?;
                Ffn::Moe(Moe {
                    router: r.weight(&l.router())?,
                    bias: r.f32(&l.expert_bias())?,
                    experts,
                    shared: if cfg.num_shared_experts > 0 { Some(r.mlp(|p| l.shared_expert(p))?) } else { None },
                })
            } else {
                Ffn::Dense(r.mlp(|p| l.mlp(p))?)
            };
            layers.push(Layer {
                input_norm: r.f32(&l.input_norm())?,
                post_norm: r.f32(&l.post_norm())?,
                qkv: r.weight(&l.qkv())?,
                dense: r.weight(&l.dense())?,
                q_norm: r.f32(&l.q_norm())?,
                k_norm: r.f32(&l.k_norm())?,
                ffn,
            });
        }
        let lm_name = if cfg.tie_word_embeddings { names::EMBED } else { names::LM_HEAD };
        let (embed, final_norm, lm_head) = (r.weight(names::EMBED)?, r.f32(names::FINAL_NORM)?, r.weight_as(lm_name, names::LM_HEAD)?);
        r.bar.finish_and_clear();
        // Each sequence gets its own KV buffers at alloc_seq; one may take at most half the memory
        // left after the weights (the rest: activations, other sequences), so a context the
        // config names but the machine cannot hold is refused at the request, not by an abort.
        let kv_budget = available_memory().unwrap_or(DEFAULT_KV_BUDGET) / 2;
        let max_seq_len = kv_budget / kv_bytes_per_position(&cfg).max(1);
        Ok(CpuBackend {
            embed,
            final_norm,
            lm_head,
            shard,
            group,
            layers,
            cfg,
            slots: Vec::new(),
            max_seq_len,
            touched: None,
            routing: None,
            head_out: None,
            draws: Vec::new(),
            fp8_activations: false,
        })
    }

    /// The routed experts' GEMMs on fp8-quantized activations (see `fp8_activations`), as the
    /// CUDA backend's W8A8 tiles compute them.
    pub fn set_fp8_activations(&mut self, on: bool) {
        self.fp8_activations = on;
    }

    /// Every rank's part, in rank order (just `part` at one rank).
    fn gather(&self, part: &[f32]) -> Result<Vec<Vec<f32>>> {
        match &self.group {
            Some(g) => g.all_gather(self.shard.rank, part),
            None => Ok(vec![part.to_vec()]),
        }
    }
}

/// The KV budget where the available memory cannot be read (not Linux).
const DEFAULT_KV_BUDGET: usize = 8 << 30;

/// K and V of every layer for one position, f32.
pub fn kv_bytes_per_position(c: &ModelConfig) -> usize {
    c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim() * 4
}

/// `n` zeros, or an error if the memory cannot be had (`vec![0.0; n]` would abort).
fn zeros(n: usize, what: &str) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| anyhow::anyhow!("out of memory allocating {} MiB for {what}", (n * 4) >> 20))?;
    v.resize(n, 0.0);
    Ok(v)
}

/// Bytes of memory the kernel says can still be had (Linux's MemAvailable).
fn available_memory() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

// ---- CPU twins of the kernels -------------------------------------------------------------

/// y = x W^T, f32 accumulate.
pub fn matmul(x: &Mat, w: &Weight) -> Mat {
    assert_eq!(x.cols, w.inp, "matmul shape mismatch");
    let mut y = Mat::zeros(x.rows, w.out);
    y.data.par_chunks_mut(w.out).enumerate().for_each(|(r, yr)| {
        let xr = x.row(r);
        for (o, yo) in yr.iter_mut().enumerate() {
            *yo = dot(xr, &w.w[o * w.inp..(o + 1) * w.inp]);
        }
    });
    y
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ms + eps).sqrt();
    for ((o, xv), wv) in out.iter_mut().zip(x).zip(w) {
        *o = xv * r * wv;
    }
}

/// (cos, sin) of the rotation of pair `i` at position `pos`, computed in f64 and rounded once
/// (large positions need f64 angles); the CUDA rope reads a table of these.
pub fn rope_cos_sin(pos: usize, i: usize, rot: usize, theta: f32) -> (f32, f32) {
    let freq = (theta as f64).powf(-2.0 * i as f64 / rot as f64);
    let a = pos as f64 * freq;
    (a.cos() as f32, a.sin() as f32)
}

/// Neox-style rotation of the first `rot` dims of one head at position `pos`.
pub fn rope_row(x: &mut [f32], pos: usize, rot: usize, theta: f32) {
    let half = rot / 2;
    for i in 0..half {
        let (c, s) = rope_cos_sin(pos, i, rot, theta);
        let (x1, x2) = (x[i], x[i + half]);
        x[i] = x1 * c - x2 * s;
        x[i + half] = x2 * c + x1 * s;
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Feed-forward of one row through a gated MLP.
fn mlp_row(m: &Mlp, x: &[f32]) -> Vec<f32> {
    let a = mlp_act(m, x);
    mlp_down(m, &a)
}

/// silu(x gate^T) * (x up^T) of one row.
fn mlp_act(m: &Mlp, x: &[f32]) -> Vec<f32> {
    (0..m.gate.out)
        .map(|j| {
            let g = dot(x, &m.gate.w[j * m.gate.inp..(j + 1) * m.gate.inp]);
            let u = dot(x, &m.up.w[j * m.up.inp..(j + 1) * m.up.inp]);
            silu(g) * u
        })
        .collect()
}

/// a down^T of one row.
fn mlp_down(m: &Mlp, a: &[f32]) -> Vec<f32> {
    let inter = m.gate.out;
    (0..m.down.out).map(|o| dot(a, &m.down.w[o * inter..(o + 1) * inter])).collect()
}

/// [`mlp_row`] as the W8A8 expert tiles compute it: x and the act row, each rounded to bf16 (as
/// the GPU holds them) and then through e4m3 per 128 columns (`fp8::round_trip_row`).
fn mlp_row_fp8_activations(m: &Mlp, x: &[f32]) -> Vec<f32> {
    let as_gpu = |v: &[f32]| crate::fp8::round_trip_row(&v.iter().map(|&e| half::bf16::from_f32(e).to_f32()).collect::<Vec<_>>());
    mlp_down(m, &as_gpu(&mlp_act(m, &as_gpu(x))))
}

/// Sigmoid router with bias-adjusted group-limited top-k; returns (expert, weight) pairs.
pub fn route(logits: &[f32], bias: &[f32], c: &ModelConfig) -> Vec<(usize, f32)> {
    let s: Vec<f32> = logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect();
    let b: Vec<f32> = s.iter().zip(bias).map(|(x, y)| x + y).collect();
    let chosen = select_experts(&b, c);
    let sum: f32 = chosen.iter().map(|&i| s[i]).sum();
    chosen.iter().map(|&i| (i, s[i] / sum * c.routed_scaling_factor)).collect()
}

/// The router's selection from one row's biased scores `b` (`[E]`): the groups with the largest
/// sums of their two best scores (`topk_group` of `n_group`, ties to the lower group), then the
/// `num_experts_per_tok` best experts among them, in rank order, ties to the lower index.
pub fn select_experts(b: &[f32], c: &ModelConfig) -> Vec<usize> {
    let gsize = b.len() / c.n_group;
    let mut gscore: Vec<(usize, f32)> = (0..c.n_group)
        .map(|g| {
            let mut v: Vec<f32> = b[g * gsize..(g + 1) * gsize].to_vec();
            v.sort_by(|x, y| y.total_cmp(x));
            (g, v[0] + v[1])
        })
        .collect();
    gscore.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    let mut cand: Vec<usize> = gscore[..c.topk_group].iter().flat_map(|&(g, _)| g * gsize..(g + 1) * gsize).collect();
    cand.sort_by(|&x, &y| b[y].total_cmp(&b[x]).then(x.cmp(&y)));
    cand.truncate(c.num_experts_per_tok);
    cand
}

/// The routers' selection values: per row of `logits` (`[rows * E]`, fp32) and expert,
/// b = sigmoid(logit) + expert_bias, `[rows * E]`.
pub fn biased_scores(logits: &[f32], bias: &[f32]) -> Vec<f32> {
    let e = bias.len();
    logits.chunks(e).flat_map(|row| row.iter().zip(bias).map(|(&l, y)| 1.0 / (1.0 + (-l).exp()) + y)).collect()
}

/// A routing block's pool from its rows' biased scores (`biased` `[rows * e]`): the `capacity`
/// experts with the largest block scores (an expert's largest b over the rows), in rank order,
/// ties to the lower expert index.
pub fn block_pool(biased: &[f32], e: usize, capacity: usize) -> Vec<usize> {
    let mut block_score = vec![f32::NEG_INFINITY; e];
    for row in biased.chunks(e) {
        for (m, &v) in block_score.iter_mut().zip(row) {
            *m = m.max(v);
        }
    }
    let mut order: Vec<usize> = (0..e).collect();
    order.sort_by(|&x, &y| block_score[y].total_cmp(&block_score[x]).then(x.cmp(&y)));
    order.truncate(capacity.min(e));
    order
}

/// One row's picks: the `k` experts of `pool` with the largest biased scores of the row
/// (`biased_row` `[e]`), in rank order, ties to the lower expert index.
pub fn pick_in_pool(biased_row: &[f32], pool: &[usize], k: usize) -> Vec<usize> {
    let mut cand = pool.to_vec();
    cand.sort_by(|&x, &y| biased_row[y].total_cmp(&biased_row[x]).then(x.cmp(&y)));
    cand.truncate(k.min(cand.len()));
    cand
}

/// LLaDA2.2's block routing of one routing block's rows (`logits` `[rows * E]`, fp32): per
/// row the (expert, weight) pairs in rank order. s = sigmoid(logit), b = s + expert_bias; an
/// expert's block score is its largest b over the block's rows; the `capacity` experts with the
/// largest block scores form the pool; each row takes the top-k of the pool by its own b; ties
/// go to the lower expert index in both; weights s_k / sum(s_chosen) * routed_scaling_factor.
/// The CUDA kernel moe_router_block computes the same.
pub fn route_block(logits: &[f32], bias: &[f32], c: &ModelConfig, capacity: usize) -> Vec<Vec<(usize, f32)>> {
    let e = bias.len();
    let s: Vec<f32> = logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect();
    let b = biased_scores(logits, bias);
    let pool = block_pool(&b, e, capacity);
    s.chunks(e)
        .zip(b.chunks(e))
        .map(|(sr, br)| {
            let chosen = pick_in_pool(br, &pool, c.num_experts_per_tok);
            let sum: f32 = chosen.iter().map(|&i| sr[i]).sum();
            chosen.iter().map(|&i| (i, sr[i] / sum * c.routed_scaling_factor)).collect()
        })
        .collect()
}

impl Backend for CpuBackend {
    type Act = Mat;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    fn alloc_seq(&mut self, max_len: usize) -> Result<usize> {
        if max_len > self.max_seq_len {
            bail!("the KV cache cannot hold {max_len} positions for one sequence (at most {})", self.max_seq_len);
        }
        let per_layer = max_len * self.cfg.num_key_value_heads * self.cfg.head_dim();
        let n = self.cfg.num_hidden_layers;
        let k = (0..n).map(|_| zeros(per_layer, "the KV cache")).collect::<Result<Vec<_>>>()?;
        let v = (0..n).map(|_| zeros(per_layer, "the KV cache")).collect::<Result<Vec<_>>>()?;
        let cache = SeqCache { max_len, k, v };
        if let Some(i) = self.slots.iter().position(|s| s.is_none()) {
            self.slots[i] = Some(cache);
            Ok(i)
        } else {
            self.slots.push(Some(cache));
            Ok(self.slots.len() - 1)
        }
    }

    fn free_seq(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            *s = None;
        }
    }

    fn embed(&mut self, tokens: &[u32]) -> Result<Mat> {
        // A forward starts here.
        if let Some(t) = &mut self.touched {
            t.clear();
        }
        if let Some(r) = &mut self.routing {
            r.clear();
        }
        let h = self.cfg.hidden_size;
        let mut x = Mat::zeros(tokens.len(), h);
        for (r, &t) in tokens.iter().enumerate() {
            if t as usize >= self.embed.out {
                bail!("token id {t} is outside the vocabulary ({})", self.embed.out);
            }
            x.data[r * h..(r + 1) * h].copy_from_slice(&self.embed.w[t as usize * h..(t as usize + 1) * h]);
        }
        Ok(x)
    }

    fn add_rms_norm(&mut self, x: &mut Mat, delta: Option<&Mat>, w: Norm) -> Result<Mat> {
        if let Some(d) = delta {
            for (a, b) in x.data.iter_mut().zip(&d.data) {
                *a += b;
            }
        }
        let wv = match w {
            Norm::Input(l) => &self.layers[l].input_norm,
            Norm::PostAttention(l) => &self.layers[l].post_norm,
            Norm::Final => &self.final_norm,
        };
        let mut out = Mat::zeros(x.rows, x.cols);
        let eps = self.cfg.rms_norm_eps;
        out.data.par_chunks_mut(x.cols).zip(x.data.par_chunks(x.cols)).for_each(|(o, xr)| rms_norm_row(xr, wv, eps, o));
        Ok(out)
    }

    fn linear(&mut self, x: &Mat, w: Linear) -> Result<Mat> {
        Ok(match w {
            Linear::Qkv(l) => matmul(x, &self.layers[l].qkv),
            Linear::AttnOut(l) => matmul(x, &self.layers[l].dense),
        })
    }

    fn qk_norm_rope_store(&mut self, qkv: &Mat, layer: usize, batch: &StepBatch) -> Result<Mat> {
        let c = &self.cfg;
        let (nh, nkv, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let (rot, theta, eps) = (c.rotary_dim(), c.rope_theta, c.rms_norm_eps);
        let l = &self.layers[layer];
        let mut q = Mat::zeros(qkv.rows, nh * d);
        let limits = batch.key_limits();
        for (r, &(slot, _)) in limits.iter().enumerate().take(qkv.rows) {
            let row = qkv.row(r);
            let pos = batch.positions[r] as usize;
            let cache = self.slots.get_mut(slot).and_then(|s| s.as_mut());
            let Some(cache) = cache else { bail!("KV slot {slot} is not allocated") };
            if pos >= cache.max_len {
                bail!("position {pos} is beyond the sequence's KV reservation ({})", cache.max_len);
            }
            for h in 0..nh {
                let out = &mut q.data[r * nh * d + h * d..r * nh * d + (h + 1) * d];
                rms_norm_row(&row[h * d..(h + 1) * d], &l.q_norm, eps, out);
                rope_row(out, pos, rot, theta);
            }
            for h in 0..nkv {
                let k_in = &row[(nh + h) * d..(nh + h + 1) * d];
                let kd = &mut cache.k[layer][(pos * nkv + h) * d..(pos * nkv + h + 1) * d];
                rms_norm_row(k_in, &l.k_norm, eps, kd);
                rope_row(kd, pos, rot, theta);
                let v_in = &row[(nh + nkv + h) * d..(nh + nkv + h + 1) * d];
                cache.v[layer][(pos * nkv + h) * d..(pos * nkv + h + 1) * d].copy_from_slice(v_in);
            }
        }
        Ok(q)
    }

    fn attention(&mut self, q: &Mat, layer: usize, batch: &StepBatch) -> Result<Mat> {
        let c = &self.cfg;
        let (nh, nkv, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let group = nh / nkv;
        let scale = 1.0 / (d as f32).sqrt();
        let limits = batch.key_limits();
        let slots = &self.slots;
        let mut out = Mat::zeros(q.rows, nh * d);
        out.data.par_chunks_mut(nh * d).enumerate().try_for_each(|(r, orow)| -> Result<()> {
            let (slot, kend) = limits[r];
            let Some(cache) = slots.get(slot).and_then(|s| s.as_ref()) else { bail!("KV slot {slot} is not allocated") };
            let (k, v) = (&cache.k[layer], &cache.v[layer]);
            for h in 0..nh {
                let kh = h / group;
                let qh = &q.data[r * nh * d + h * d..r * nh * d + (h + 1) * d];
                let scores: Vec<f32> = (0..kend).map(|p| dot(qh, &k[(p * nkv + kh) * d..(p * nkv + kh + 1) * d]) * scale).collect();
                let m = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f32 = e.iter().sum();
                let o = &mut orow[h * d..(h + 1) * d];
                for (p, ep) in e.iter().enumerate() {
                    let vr = &v[(p * nkv + kh) * d..(p * nkv + kh + 1) * d];
                    for (oi, vi) in o.iter_mut().zip(vr) {
                        *oi += ep / z * vi;
                    }
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn ffn(&mut self, x: &Mat, layer: usize, batch: &StepBatch) -> Result<Mat> {
        let c = &self.cfg;
        let mut y = Mat::zeros(x.rows, x.cols);
        match &self.layers[layer].ffn {
            Ffn::Dense(m) => y.data.par_chunks_mut(x.cols).enumerate().for_each(|(r, yr)| {
                yr.copy_from_slice(&mlp_row(m, x.row(r)));
            }),
            Ffn::Moe(moe) => {
                let logits = matmul(x, &moe.router);
                let routes: Vec<Vec<(usize, f32)>> = match c.block_routing() {
                    None => logits.data.par_chunks(logits.cols).map(|l| route(l, &moe.bias, c)).collect(),
                    Some(br) => {
                        let blocks = batch.routing_blocks(br.block)?;
                        if blocks.last().map_or(0, |b| b.end) != x.rows {
                            bail!("block routing: the batch has {} tokens, the activations {} rows", batch.num_tokens(), x.rows);
                        }
                        let e = logits.cols;
                        let per_block: Vec<Vec<Vec<(usize, f32)>>> = blocks
                            .par_iter()
                            .map(|r| route_block(&logits.data[r.start * e..r.end * e], &moe.bias, c, br.capacity))
                            .collect();
                        per_block.into_iter().flatten().collect()
                    }
                };
                if self.group.is_some() {
                    // Replicated routers on identical inputs: every rank routes alike (the twin
                    // checks it at every layer; the CUDA ranks when `check_tp_routing`).
                    let ids: Vec<f32> = routes.iter().flatten().map(|&(e, _)| e as f32).collect();
                    if self.gather(&ids)?.iter().any(|other| *other != ids) {
                        bail!("tensor-parallel ranks routed layer {layer}'s tokens differently");
                    }
                }
                if let Some(t) = &mut self.touched {
                    let mut seen = vec![false; c.num_experts];
                    routes.iter().flatten().for_each(|&(e, _)| seen[e] = true);
                    t.push(seen.iter().filter(|&&s| s).count());
                }
                if let Some(rec) = &mut self.routing {
                    let e = logits.cols;
                    let biased = biased_scores(&logits.data, &moe.bias);
                    let pools = match c.block_routing() {
                        None => vec![],
                        // The pools route_block made: the same function of the same values.
                        Some(br) => batch
                            .routing_blocks(br.block)?
                            .into_iter()
                            .map(|rows| BlockPool { experts: block_pool(&biased[rows.start * e..rows.end * e], e, br.capacity), rows })
                            .collect(),
                    };
                    rec.push(LayerRouting {
                        layer,
                        picks: routes.iter().map(|r| r.iter().map(|&(x, _)| x).collect()).collect(),
                        pools,
                        biased: biased.chunks(e).map(<[f32]>::to_vec).collect(),
                    });
                }
                let routed_mlp = if self.fp8_activations { mlp_row_fp8_activations } else { mlp_row };
                y.data.par_chunks_mut(x.cols).enumerate().for_each(|(r, yr)| {
                    let xr = x.row(r);
                    for &(e, w) in &routes[r] {
                        for (a, b) in yr.iter_mut().zip(routed_mlp(&moe.experts[e], xr)) {
                            *a += w * b;
                        }
                    }
                    if let Some(s) = &moe.shared {
                        for (a, b) in yr.iter_mut().zip(mlp_row(s, xr)) {
                            *a += b;
                        }
                    }
                })
            }
        }
        Ok(y)
    }

    fn all_reduce(&mut self, x: &mut Mat) -> Result<()> {
        if let Some(g) = &self.group {
            g.all_reduce_sum(self.shard.rank, &mut x.data)?;
        }
        Ok(())
    }

    fn gather_rows(&mut self, x: &Mat, rows: &[usize]) -> Result<Mat> {
        let mut out = Mat::zeros(rows.len(), x.cols);
        for (i, &r) in rows.iter().enumerate() {
            out.data[i * x.cols..(i + 1) * x.cols].copy_from_slice(x.row(r));
        }
        Ok(out)
    }

    fn head(&mut self, x: &Mat, head: Head) -> Result<()> {
        let logits = matmul(x, &self.lm_head);
        self.head_out = Some(match (head, &self.group) {
            (Head::Pick, None) => HeadOut::Picks(logits.data.par_chunks(logits.cols).map(pick_row).collect()),
            (Head::Pick, Some(_)) => {
                // Each row's share of this rank's vocabulary slice, then every rank combines all ranks'.
                let first = self.shard.vocab(self.cfg.vocab_size).start as u32;
                let shares: Vec<f32> =
                    logits.data.par_chunks(logits.cols).flat_map_iter(|row| partial_pick(row, first).to_share()).collect();
                HeadOut::Picks(combine_pick_shares(&self.gather(&shares)?, x.rows))
            }
            (Head::Logits, None) => HeadOut::Logits(logits.data),
            (Head::Logits, Some(_)) => HeadOut::Logits(self.shard.assemble_vocab(&self.gather(&logits.data)?, x.rows, self.cfg.vocab_size)),
            (Head::Top, _) => {
                // Whole rows at every rank (tensor parallel: gathered as for Head::Logits), so a
                // summary is that of the rows Head::Logits gives, to the bit.
                let whole = match &self.group {
                    None => logits.data,
                    Some(_) => self.shard.assemble_vocab(&self.gather(&logits.data)?, x.rows, self.cfg.vocab_size),
                };
                let tops = whole.par_chunks(self.cfg.vocab_size.max(1)).map(|row| row_top(row, 0)).collect();
                HeadOut::Tops { tops, logits: whole }
            }
            (Head::Sample, _) => {
                if self.draws.len() != x.rows {
                    bail!("head: {} draws set for {} rows", self.draws.len(), x.rows);
                }
                let whole = match &self.group {
                    None => logits.data,
                    Some(_) => self.shard.assemble_vocab(&self.gather(&logits.data)?, x.rows, self.cfg.vocab_size),
                };
                let v = self.cfg.vocab_size;
                HeadOut::Picks(self.draws.par_iter().enumerate().map(|(i, d)| d.pick(&whole[i * v..(i + 1) * v])).collect())
            }
        });
        Ok(())
    }

    fn set_draws(&mut self, draws: &[RowDraw]) -> Result<()> {
        self.draws = draws.to_vec();
        Ok(())
    }

    fn read_picks(&mut self) -> Result<Vec<Pick>> {
        match self.head_out.take() {
            Some(HeadOut::Picks(p)) => Ok(p),
            _ => bail!("read_picks: the last forward's head made no picks"),
        }
    }

    fn read_logits(&mut self) -> Result<Vec<f32>> {
        match self.head_out.take() {
            Some(HeadOut::Logits(l)) => Ok(l),
            _ => bail!("read_logits: the last forward's head made no logits"),
        }
    }

    fn summarizes_rows(&self) -> bool {
        true
    }

    fn read_tops(&mut self) -> Result<Vec<RowTop>> {
        match &self.head_out {
            Some(HeadOut::Tops { tops, .. }) => Ok(tops.clone()),
            _ => bail!("read_tops: the last forward's head made no row summaries"),
        }
    }

    fn read_logit_rows(&mut self, rows: &[usize]) -> Result<Vec<f32>> {
        let Some(HeadOut::Tops { logits, .. }) = &self.head_out else {
            bail!("read_logit_rows: the last forward's head kept no logits rows");
        };
        let v = self.cfg.vocab_size;
        let n = logits.len() / v.max(1);
        let mut out = Vec::with_capacity(rows.len() * v);
        for &r in rows {
            if r >= n {
                bail!("read_logit_rows: row {r} of {n}");
            }
            out.extend_from_slice(&logits[r * v..(r + 1) * v]);
        }
        Ok(out)
    }
}

impl Measure for CpuBackend {
    fn count_experts(&mut self, on: bool) {
        self.touched = on.then(Vec::new);
    }

    fn experts_touched(&self) -> Vec<usize> {
        self.touched.clone().unwrap_or_default()
    }

    fn record_routing(&mut self, on: bool) {
        self.routing = on.then(Vec::new);
    }

    fn routing(&self) -> Vec<LayerRouting> {
        self.routing.clone().unwrap_or_default()
    }

    fn expert_bias(&self, layer: usize) -> Result<Vec<f32>> {
        match self.layers.get(layer).map(|l| &l.ffn) {
            Some(Ffn::Moe(m)) => Ok(m.bias.clone()),
            _ => bail!("layer {layer} is not a MoE layer"),
        }
    }

    fn set_expert_bias(&mut self, layer: usize, bias: &[f32]) -> Result<()> {
        match self.layers.get_mut(layer).map(|l| &mut l.ffn) {
            Some(Ffn::Moe(m)) if m.bias.len() == bias.len() => {
                m.bias.copy_from_slice(bias);
                Ok(())
            }
            Some(Ffn::Moe(m)) => bail!("layer {layer}: expert_bias has {} values, got {}", m.bias.len(), bias.len()),
            _ => bail!("layer {layer} is not a MoE layer"),
        }
    }

    /// Host memory bandwidth: the CPU backend's ceiling.
    fn measure_copy_bandwidth(&mut self) -> Result<f64> {
        let n = 64 << 20;
        let src = vec![1u8; n];
        let mut dst = vec![0u8; n];
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(2.0 * n as f64 / best)
    }

    /// The twin quantizes the activations at every row count once set (the CUDA W8A8 tiles
    /// forced), and never otherwise.
    fn expert_math(&self, _rows: usize) -> ExpertMath {
        match (self.cfg.fp8_experts(), self.fp8_activations) {
            (false, _) => ExpertMath::Bf16,
            (true, false) => ExpertMath::W8A16,
            (true, true) => ExpertMath::W8A8,
        }
    }
}
