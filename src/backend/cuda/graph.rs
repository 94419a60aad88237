//! CUDA graphs of the denoising step (SGLang's `--cuda-graph-max-bs`, `--disable-cuda-graph`).
//!
//! A step is ~20 launches a layer, most of them a few microseconds long at small batches: issued
//! one by one they leave the GPU idle between them. The first forward of a step shape (see
//! [`StepShape`]: tokens, output rows, attention tiles and splits, page-table room) runs
//! eagerly, its result is the step's, and is then recorded (stream capture) into a graph that
//! owns its own input pack and output buffers; a later step of that shape copies its inputs into
//! the pack (one copy) and replays the graph. Everything a replay must see change is data in
//! the pack (token ids, positions, page tables, key limits, the attention's keys per split), so
//! one graph serves every step of a block, every block while the context stays within its
//! power of two, and any requests of the same shape. Activations inside the graph are its own
//! stream-ordered allocations, freed inside it.
//!
//! What is never recorded (it syncs with the host inside the forward, or times each launch):
//! expert counting, the tensor-parallel routing check, per-launch profiling and
//! `DLLM_CUDA_SYNC`; nor a step that carries a prompt (a one-off shape). A shape whose
//! recording fails runs eagerly from then on (said once).

use super::attention::StepShape;
use super::error::CudaError;
use super::kernels::{
    params::{RowSampling, ROW_TOP_SUMMARY},
    Graph,
};
use super::CudaBackend;
use crate::backend::{GraphSteps, Head, StepBatch};
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;
use std::collections::{HashMap, HashSet};

/// The most graphs kept; past it the least recently replayed is dropped. Requests in different
/// phases of their blocks give a batch of B requests up to B + 1 token counts, each a shape.
const MAX_GRAPHS: usize = 64;

/// A recorded step predicts a multiple of this many output rows, or of a sixteenth of its tokens
/// where that is more, so a block's steps (each predicting only the positions still masked)
/// share at most 16 recordings a token count. Below ~180 rows mini's lm_head takes the time of
/// reading its weights (157k x 2048 bf16) whatever the rows, so rounding up that far is free.
const OUT_ROWS_STEP: usize = 128;

/// A recorded forward is found by its shape and what its head returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct GraphKey {
    shape: StepShape,
    head: Head,
}

/// The lm_head's results on the device until read: picks (token, probability and, tensor
/// parallel, this rank's shares of them) or this rank's logits rows. A graph owns its own.
pub(super) struct HeadOut {
    pub head: Head,
    pub rows: usize,
    pub token: CudaSlice<u32>,
    pub prob: CudaSlice<f32>,
    pub share: Option<CudaSlice<f32>>,
    pub logits: Option<CudaSlice<f32>>,
    /// `Head::Top`: each row's summary, `[rows][ROW_TOP_SUMMARY]` (row_top_k.cu); the rows
    /// stay in `logits` for reading back whole.
    pub tops: Option<CudaSlice<f32>>,
    /// `Head::Sample`: each row's knobs and uniform (written before the forward or replay).
    pub sampling: Option<CudaSlice<RowSampling>>,
}

struct Recorded {
    graph: Graph,
    /// The pack the graph's kernels read (a replay copies its inputs here first).
    pack: CudaSlice<i32>,
    out: HeadOut,
    last_used: u64,
}

pub(super) struct StepGraphs {
    max_bs: usize,
    recorded: HashMap<GraphKey, Recorded>,
    /// Shapes whose recording failed: they run eagerly.
    unrecordable: HashSet<GraphKey>,
    /// The graph the last step replayed, whose outputs the reads fetch.
    replayed: Option<GraphKey>,
    /// Replays so far (tests).
    replays: u64,
    /// Recordings so far (benchmarks).
    recordings: u64,
    clock: u64,
}

impl StepGraphs {
    pub fn new(max_bs: usize) -> Self {
        StepGraphs { max_bs, recorded: HashMap::new(), unrecordable: HashSet::new(), replayed: None, replays: 0, recordings: 0, clock: 0 }
    }
}

impl CudaBackend {
    /// (CUDA graphs held, steps replayed from them) so far (tests).
    pub fn graph_counts(&self) -> (usize, u64) {
        (self.graphs.recorded.len(), self.graphs.replays)
    }

    /// Step shapes recorded so far (those since dropped included) and steps replayed (None with
    /// graphs off).
    pub(super) fn graph_steps_total(&self) -> Option<GraphSteps> {
        (self.graphs.max_bs > 0).then_some(GraphSteps { recorded: self.graphs.recordings, replayed: self.graphs.replays })
    }

    /// Make `self.out` hold `rows` results of `head` (reused when it already does, so a forward
    /// being recorded writes the buffers the graph keeps), with the draws set for `Head::Sample`
    /// in it. Never called inside a capture with buffers to make (the capture makes them first).
    pub(super) fn ensure_head_out(&mut self, head: Head, rows: usize) -> Result<()> {
        if self.out.as_ref().is_some_and(|o| o.head == head && o.rows == rows) {
            return Ok(());
        }
        let sampling = match head {
            Head::Sample => {
                if self.draws.len() != rows {
                    bail!("{} draws set for {rows} rows", self.draws.len());
                }
                Some(self.upload(&self.draws, "sampling knobs")?)
            }
            _ => None,
        };
        let logits = match head {
            Head::Logits | Head::Top => Some(self.alloc_f32(rows * self.vocab_slice().len(), "logits")?),
            Head::Pick | Head::Sample => None,
        };
        let tops = match head {
            Head::Top => Some(self.alloc_f32(rows * ROW_TOP_SUMMARY, "logits row summaries")?),
            _ => None,
        };
        let share = match (&self.tp.group, head) {
            (Some(_), Head::Pick) => Some(self.alloc_f32(3 * rows, "pick shares")?),
            _ => None,
        };
        self.out = Some(HeadOut {
            head,
            rows,
            token: self.k.alloc::<u32>(rows, "picked tokens")?,
            prob: self.alloc_f32(rows, "pick probabilities")?,
            share,
            logits,
            tops,
            sampling,
        });
        Ok(())
    }

    /// The draws set for this step into `out`'s knobs (a replay's or an eager forward's).
    fn write_draws(&self, out: &mut HeadOut) -> Result<()> {
        if let Some(buf) = &mut out.sampling {
            if self.draws.len() != out.rows {
                bail!("{} draws set for {} rows", self.draws.len(), out.rows);
            }
            self.k.stream.memcpy_htod(&self.draws, buf).map_err(CudaError::driver(|| "copying the sampling knobs".into()))?;
        }
        Ok(())
    }

    /// `self.out` ready for `head` over `rows`, holding this step's draws.
    fn prepare_head_out(&mut self, head: Head, rows: usize) -> Result<()> {
        self.ensure_head_out(head, rows)?;
        let mut out = self.out.take();
        let written = out.as_mut().map_or(Ok(()), |o| self.write_draws(o));
        self.out = out;
        written
    }

    /// The outputs of the last forward's head (the replayed graph's, else the eager ones), when
    /// it was one of `heads`.
    pub(super) fn head_out(&self, heads: &[Head]) -> Result<&HeadOut> {
        let out = match self.graphs.replayed {
            Some(key) => self.graphs.recorded.get(&key).map(|r| &r.out),
            None => self.out.as_ref(),
        };
        match out {
            Some(o) if heads.contains(&o.head) => Ok(o),
            _ => bail!("reading the lm_head's {heads:?} results, but the last forward's head made none"),
        }
    }

    /// Whether this forward may be recorded or replayed: nothing in it may talk to the host, and
    /// each request carries at most its block and the finished block before it (whose K/V the
    /// block's first step writes). A step that also carries a prompt has a one-off shape (its
    /// length): recording it would buy a capture and a graph's activations that no later step
    /// replays, and would push the block steps' graphs out (SGLang graphs no extend batch).
    fn graphable(&self, batch: &StepBatch) -> bool {
        self.graphs.max_bs > 0
            && batch.runs.len() <= self.graphs.max_bs
            && batch.runs.iter().all(|r| r.len <= 2 * r.block_size)
            && self.touched.borrow().is_none()
            && self.routing.borrow().is_none()
            && !self.opts.check_tp_routing
            && !self.k.profiling()
            && !self.k.syncs_each_launch()
    }

    /// [`crate::backend::Backend::padded_out_rows`]: the count rounded up to its step
    /// ([`OUT_ROWS_STEP`]), at most the forward's tokens. Eager forwards too, so that a step
    /// computes the same shapes (and cuBLAS picks the same kernels) recorded or not.
    pub(super) fn graph_out_rows(&self, batch: &StepBatch, rows: usize) -> usize {
        let tokens = batch.num_tokens();
        let step = OUT_ROWS_STEP.max((tokens / 16).next_multiple_of(32));
        rows.next_multiple_of(step).min(tokens.max(rows))
    }

    /// [`crate::backend::Backend::step_forward`]: replay the shape's graph, or run `forward`
    /// eagerly and record it.
    pub(super) fn graphed_step(
        &mut self,
        batch: &StepBatch,
        out_rows: &[usize],
        head: Head,
        forward: &mut dyn FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        self.graphs.replayed = None;
        if !self.graphable(batch) {
            self.mark_step_start()?;
            self.stage(batch, out_rows)?;
            self.prepare_head_out(head, out_rows.len())?;
            return forward(self);
        }
        let (shape, host) = self.layout_image(batch, out_rows)?;
        let key = GraphKey { shape, head };
        self.graphs.clock += 1;
        let clock = self.graphs.clock;
        if let Some(mut rec) = self.graphs.recorded.remove(&key) {
            // Out of the map while its inputs are written (that borrows the backend), then back.
            let replayed = self.replay(&mut rec, &host);
            rec.last_used = clock;
            self.graphs.recorded.insert(key, rec);
            replayed?;
            self.graphs.replayed = Some(key);
            self.graphs.replays += 1;
            return Ok(());
        }
        // The shape's first step: eagerly (its result is this step's), then recorded.
        self.mark_step_start()?;
        self.step = Some(self.upload_layout(batch, out_rows, shape, &host)?);
        self.prepare_head_out(head, out_rows.len())?;
        forward(self)?;
        if !self.graphs.unrecordable.contains(&key) {
            if let Err(e) = self.record(key, batch, out_rows, &host, forward) {
                eprintln!(
                    "warning: the CUDA graph of a {}-token step was not recorded; steps of its shape run eagerly: {e:#}",
                    shape.tokens
                );
                self.graphs.unrecordable.insert(key);
            }
        }
        Ok(())
    }

    /// This step's inputs (and draws) into the recording's buffers, then its replay.
    fn replay(&self, rec: &mut Recorded, host: &[i32]) -> Result<()> {
        self.mark_step_start()?;
        self.k.stream.memcpy_htod(host, &mut rec.pack).map_err(CudaError::driver(|| "copying the step's inputs".into()))?;
        self.write_draws(&mut rec.out)?;
        Ok(rec.graph.launch()?)
    }

    /// Record `forward` for `key` on inputs and outputs of its own, leaving the eager forward's
    /// (this step's results) in place.
    fn record(
        &mut self,
        key: GraphKey,
        batch: &StepBatch,
        out_rows: &[usize],
        host: &[i32],
        forward: &mut dyn FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        let eager = (self.step.take(), self.out.take());
        let recorded = self.capture(key, batch, out_rows, host, forward);
        let (layout, out) = (self.step.take(), self.out.take());
        (self.step, self.out) = eager;
        let graph = recorded?;
        let (Some(layout), Some(out)) = (layout, out) else { bail!("the recorded forward left no inputs or outputs") };
        if self.graphs.recorded.len() >= MAX_GRAPHS {
            if let Some(old) = self.graphs.recorded.iter().min_by_key(|(_, r)| r.last_used).map(|(k, _)| *k) {
                self.graphs.recorded.remove(&old);
            }
        }
        let last_used = self.graphs.clock;
        self.graphs.recorded.insert(key, Recorded { graph, pack: layout.pack, out, last_used });
        self.graphs.recordings += 1;
        Ok(())
    }

    fn capture(
        &mut self,
        key: GraphKey,
        batch: &StepBatch,
        out_rows: &[usize],
        host: &[i32],
        forward: &mut dyn FnMut(&mut Self) -> Result<()>,
    ) -> Result<Graph> {
        // Made before the capture: buffers that outlive the graph cannot be allocated inside it.
        self.step = Some(self.upload_layout(batch, out_rows, key.shape, host)?);
        self.prepare_head_out(key.head, out_rows.len())?;
        self.k.begin_capture()?;
        let issued = forward(self);
        // Always end the capture, so the stream leaves capture mode whatever happened.
        let graph = self.k.end_capture();
        issued?;
        Ok(graph?)
    }
}
