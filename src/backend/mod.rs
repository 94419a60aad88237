//! The ops the LLaDA2 forward needs, implemented by a CPU reference and a CUDA backend.
//! `model.rs` is written once against this trait.

pub mod cpu;
#[cfg(dllm_cuda)]
pub mod cuda;
pub mod measure;
pub mod mem_group;
pub mod ranks;
pub mod shard;

pub use measure::{BlockPool, ExpertMath, GraphSteps, LayerRouting, Measure};

use crate::decode::row_top::RowTop;
use crate::decode::sample::RowDraw;
use crate::decode::Pick;
use anyhow::Result;

/// Steps of up to this many requests are recorded as CUDA graphs by default
/// (`--cuda-graph-max-bs`). On H100s, graphs made mini's batch-128 steps 0.7-4.4% faster than
/// eager, and batch 256's no faster (sampled ones 1.5% slower, with 3 GB more held); so 128, not
/// SGLang's 256 (docs/perf/session68).
pub const DEFAULT_CUDA_GRAPH_MAX_BS: usize = 128;

/// One request's contiguous run of tokens in a step: positions `start .. start + len`,
/// block-aligned at `start`. Its K/V are written to the request's cache at those positions;
/// a token at position p attends to keys `[0, min(end_of_block(p), start + len))`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqRun {
    pub slot: usize,
    pub start: usize,
    pub len: usize,
    pub block_size: usize,
}

/// The tokens of one forward: the runs of one or more requests, concatenated.
#[derive(Debug, Clone, Default)]
pub struct StepBatch {
    pub runs: Vec<SeqRun>,
    pub tokens: Vec<u32>,
    pub positions: Vec<u32>,
}

impl StepBatch {
    pub fn push(&mut self, slot: usize, start: usize, tokens: &[u32], block_size: usize) {
        self.runs.push(SeqRun { slot, start, len: tokens.len(), block_size });
        self.tokens.extend_from_slice(tokens);
        self.positions.extend((start..start + tokens.len()).map(|p| p as u32));
    }
    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
    }
    /// LLaDA2.2's routing blocks (`block` positions each, from position 0) as ranges of the
    /// batch's rows: each run cut where a position is a multiple of `block`. A run must start on
    /// a routing block's first position (the engine's runs start on decode blocks, which for a
    /// block-routed model are routing blocks): a block whose first tokens are not in the forward
    /// would route on some of its tokens only. A run's last piece may be short (a forward over a
    /// sequence that ends mid-block): it routes on the tokens it has.
    pub fn routing_blocks(&self, block: usize) -> Result<Vec<std::ops::Range<usize>>> {
        if block == 0 {
            anyhow::bail!("routing block size 0");
        }
        let mut out = vec![];
        let mut row = 0;
        for r in &self.runs {
            if !r.start.is_multiple_of(block) {
                anyhow::bail!("block routing: a forward's run starts at position {}, inside a routing block of {block} positions", r.start);
            }
            let mut p = 0;
            while p < r.len {
                let n = block.min(r.len - p);
                out.push(row + p..row + p + n);
                p += n;
            }
            row += r.len;
        }
        Ok(out)
    }
    /// For each token, the end (exclusive) of the keys it may see, and its run's start row.
    pub fn key_limits(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(self.tokens.len());
        for r in &self.runs {
            for p in r.start..r.start + r.len {
                let block_end = (p / r.block_size + 1) * r.block_size;
                out.push((r.slot, block_end.min(r.start + r.len)));
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    Input(usize),
    PostAttention(usize),
    Final,
}

/// What the lm_head hands back for a forward's output rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Head {
    /// Per row the argmax token and its softmax probability (greedy): a few bytes a row.
    Pick,
    /// Whole logits rows (penalties and biases on the host, tests).
    Logits,
    /// Per row a draw under its request's knobs, made where the logits are (see
    /// [`Backend::set_draws`]): a few bytes a row, as `Pick`.
    Sample,
    /// Per row its summary ([`RowTop`]: the best entries, the max and the sum of exp over the
    /// whole vocabulary), `2K + 2` numbers a row; the rows themselves stay with the backend
    /// until the next `head`, for [`Backend::read_logit_rows`] (JointThresholdInDel).
    Top,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linear {
    Qkv(usize),
    AttnOut(usize),
}

/// [`Backend::linear_residual`] without the residual: `o w^T` summed over the tensor-parallel
/// ranks (row-parallel: each holds its heads' share), for the next norm to add.
pub fn linear_to_add<B: Backend + ?Sized>(b: &mut B, o: &B::Act, w: Linear) -> Result<Option<B::Act>> {
    let mut out = b.linear(o, w)?;
    b.all_reduce(&mut out)?;
    Ok(Some(out))
}

/// [`Backend::ffn_residual`] without the residual: the feed-forward summed over the
/// tensor-parallel ranks (each holds its slice of every intermediate width), for the next norm
/// to add.
pub fn ffn_to_add<B: Backend + ?Sized>(b: &mut B, h: &B::Act, layer: usize, batch: &StepBatch) -> Result<Option<B::Act>> {
    let mut y = b.ffn(h, layer, batch)?;
    b.all_reduce(&mut y)?;
    Ok(Some(y))
}

/// [`Backend::qkv_rope_store`] in two passes: the QKV projection, then
/// [`Backend::qk_norm_rope_store`] (a backend without the one-pass form, or rows it does not take).
pub fn qkv_then_rope_store<B: Backend + ?Sized>(b: &mut B, h: &B::Act, layer: usize, batch: &StepBatch) -> Result<B::Act> {
    let qkv = b.linear(h, Linear::Qkv(layer))?;
    b.qk_norm_rope_store(&qkv, layer, batch)
}

pub trait Backend {
    /// Activations: `[rows, cols]`, row-major.
    type Act;

    fn name(&self) -> String;
    /// The most positions one sequence's KV cache can hold: the engine's context never exceeds
    /// it, whatever the config's max_position_embeddings says.
    fn max_seq_len(&self) -> usize;
    /// Reserve KV cache for a sequence of up to `max_len` positions; returns its slot. Memory
    /// that cannot be had is an error, never an abort.
    fn alloc_seq(&mut self, max_len: usize) -> Result<usize>;
    fn free_seq(&mut self, slot: usize);

    fn embed(&mut self, tokens: &[u32]) -> Result<Self::Act>;
    /// `x += delta` (when given), then return `RMSNorm(x) * w`.
    fn add_rms_norm(&mut self, x: &mut Self::Act, delta: Option<&Self::Act>, w: Norm) -> Result<Self::Act>;
    fn linear(&mut self, x: &Self::Act, w: Linear) -> Result<Self::Act>;
    /// `o w^T` summed over the tensor-parallel ranks, for the residual stream `x`: returned for
    /// the next [`Backend::add_rms_norm`] to add (this default), or `None` where the backend
    /// added it into `x` itself as it computed it (CUDA at one rank: the GEMM's epilogue reads
    /// and writes `x`, so the norm after it reads one f32 row instead of two and writes none).
    fn linear_residual(&mut self, x: &mut Self::Act, o: &Self::Act, w: Linear) -> Result<Option<Self::Act>> {
        let _ = x;
        linear_to_add(self, o, w)
    }
    /// Split fused QKV, RMSNorm q and k per head, rotate them, write k and v to the cache
    /// at the batch's positions; returns q `[T, NH*D]`.
    fn qk_norm_rope_store(&mut self, qkv: &Self::Act, layer: usize, batch: &StepBatch) -> Result<Self::Act>;
    /// The QKV projection of the normed rows `h`, then [`Backend::qk_norm_rope_store`]: returns
    /// q. A backend may do both in one pass (CUDA on Hopper: the norm, rotation and stores in the
    /// projection's epilogue).
    fn qkv_rope_store(&mut self, h: &Self::Act, layer: usize, batch: &StepBatch) -> Result<Self::Act> {
        qkv_then_rope_store(self, h, layer, batch)
    }
    /// Block-causal GQA attention of q over the cached keys; returns `[T, NH*D]`.
    fn attention(&mut self, q: &Self::Act, layer: usize, batch: &StepBatch) -> Result<Self::Act>;
    /// The layer's feed-forward: dense MLP or MoE (router, routed experts, shared expert). `x`
    /// holds the batch's rows: a block-routed model (LLaDA2.2) routes each of the batch's
    /// routing blocks ([`StepBatch::routing_blocks`]) on its own rows.
    fn ffn(&mut self, x: &Self::Act, layer: usize, batch: &StepBatch) -> Result<Self::Act>;
    /// [`Backend::ffn`] over the normed rows `h`, summed over the tensor-parallel ranks, for the
    /// residual stream `x`: returned for the next [`Backend::add_rms_norm`] to add (this
    /// default). A backend may add it into `x` itself and return `None` (CUDA at one rank: a
    /// dense MLP's down projection, in its GEMM's epilogue).
    fn ffn_residual(&mut self, x: &mut Self::Act, h: &Self::Act, layer: usize, batch: &StepBatch) -> Result<Option<Self::Act>> {
        let _ = x;
        ffn_to_add(self, h, layer, batch)
    }
    /// Sum a row-parallel output's partial sums over the tensor-parallel ranks, in place (every
    /// rank then holds the same bits); nothing at one rank.
    fn all_reduce(&mut self, x: &mut Self::Act) -> Result<()>;
    fn gather_rows(&mut self, x: &Self::Act, rows: &[usize]) -> Result<Self::Act>;
    /// The lm_head over `x`'s rows; what it produced stays with the backend (on the device)
    /// until [`Backend::read_picks`] or [`Backend::read_logits`] fetches it. `Head::Pick` fuses
    /// the per-row argmax and its softmax probability (tensor parallel: over the whole
    /// vocabulary, the ranks combining their slices' shares when it is read).
    fn head(&mut self, x: &Self::Act, head: Head) -> Result<()>;
    /// The draws the next `head(.., Head::Sample)` makes, one per output row.
    fn set_draws(&mut self, draws: &[RowDraw]) -> Result<()>;
    /// The picks of the last `head(.., Head::Pick)` or `head(.., Head::Sample)`.
    fn read_picks(&mut self) -> Result<Vec<Pick>>;
    /// The logits rows of the last `head(.., Head::Logits)` (tensor parallel: gathered from the
    /// ranks), `[rows * vocab]`.
    fn read_logits(&mut self) -> Result<Vec<f32>>;
    /// Whether this backend makes `Head::Top` (the engine otherwise reads whole rows).
    fn summarizes_rows(&self) -> bool {
        false
    }
    /// The row summaries of the last `head(.., Head::Top)` (tensor parallel: over the whole
    /// vocabulary, every rank holding the same).
    fn read_tops(&mut self) -> Result<Vec<RowTop>> {
        anyhow::bail!("{} makes no logits row summaries", self.name())
    }
    /// Whole logits rows `rows` (indices into the output rows) of the last
    /// `head(.., Head::Top)`, `[rows.len() * vocab]` (tensor parallel: every rank must call it,
    /// as its slices are gathered).
    fn read_logit_rows(&mut self, rows: &[usize]) -> Result<Vec<f32>> {
        let _ = rows;
        anyhow::bail!("{} keeps no logits rows", self.name())
    }

    fn lm_head_pick(&mut self, x: &Self::Act) -> Result<Vec<Pick>> {
        self.head(x, Head::Pick)?;
        self.read_picks()
    }
    fn lm_head_logits(&mut self, x: &Self::Act) -> Result<Vec<f32>> {
        self.head(x, Head::Logits)?;
        self.read_logits()
    }

    /// How many output rows a step's forward over `batch` computes to predict `rows` of them
    /// (at least `rows`; the model repeats the last row into the rest and drops their results).
    /// A backend that records forwards by shape (CUDA graphs) rounds the count up, so that the
    /// steps of a block, which predict fewer rows as it unmasks, share a few recordings.
    fn padded_out_rows(&self, batch: &StepBatch, rows: usize) -> usize {
        let _ = batch;
        rows
    }

    /// One denoising step's forward over `batch`, predicting `out_rows`: `forward` issues its
    /// ops, ending with [`Backend::head`]. A backend that can record its launches (CUDA graphs)
    /// may record the first forward of a shape and replay the recording for later ones on
    /// their own inputs instead of calling `forward`; the results read the same either way.
    fn step_forward(
        &mut self,
        batch: &StepBatch,
        out_rows: &[usize],
        head: Head,
        forward: &mut dyn FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        let _ = (batch, out_rows, head);
        forward(self)
    }
}
