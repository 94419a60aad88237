//! What the engine runs its forwards on: one backend, or a tensor-parallel group of rank
//! backends that all run the same forward (`model.rs` does not know how many there are).

use crate::backend::ranks::Ranks;
use crate::backend::{Backend, GraphSteps, Measure, StepBatch};
use crate::config::ModelConfig;
use crate::decode::row_top::RowTop;
use crate::decode::sample::RowDraw;
use crate::decode::Pick;
use crate::model;
use anyhow::{bail, Result};
use std::sync::Arc;

pub trait Runner {
    /// The device(s), for logs and reports.
    fn label(&self) -> String;
    /// The most positions one sequence's KV may hold.
    fn seq_capacity(&self) -> usize;
    /// Reserve KV for a sequence of up to `max_len` positions; its slot.
    fn open_seq(&mut self, max_len: usize) -> Result<usize>;
    fn close_seq(&mut self, slot: usize);
    /// Greedy picks for `out_rows` (see [`model::forward_pick`]).
    fn pick(&mut self, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize]) -> Result<Vec<Pick>>;
    /// Per output row a draw under its request's knobs, made where the logits are (see
    /// [`model::forward_sample`]); only where [`Runner::samples`] says so.
    fn sample(&mut self, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize], draws: &[RowDraw]) -> Result<Vec<Pick>>;
    /// Whether [`Runner::sample`] can run here (tensor-parallel ranks hold vocabulary slices,
    /// so their rows are sampled from gathered logits instead).
    fn samples(&self) -> bool;
    /// Full logits for `out_rows`, `[out_rows.len() * vocab]`.
    fn logits(&mut self, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize]) -> Result<Vec<f32>>;
    /// Whether [`Runner::tops`] can run here.
    fn summarizes(&self) -> bool;
    /// Per output row its summary (see [`model::forward_tops`]); the rows stay where they are
    /// for [`Runner::logit_rows`] until the next forward.
    fn tops(&mut self, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize]) -> Result<Vec<RowTop>>;
    /// Whole logits rows of the last [`Runner::tops`] (indices into its output rows),
    /// `[rows.len() * vocab]`.
    fn logit_rows(&mut self, rows: &[usize]) -> Result<Vec<f32>>;
    /// K/V of the batch into the cache, nothing else (chunked prefill).
    fn prefill(&mut self, cfg: &ModelConfig, batch: &StepBatch) -> Result<()>;
}

impl<B: Backend> Runner for B {
    fn label(&self) -> String {
        self.name()
    }
    fn seq_capacity(&self) -> usize {
        self.max_seq_len()
    }
    fn open_seq(&mut self, max_len: usize) -> Result<usize> {
        self.alloc_seq(max_len)
    }
    fn close_seq(&mut self, slot: usize) {
        self.free_seq(slot)
    }
    fn pick(&mut self, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize]) -> Result<Vec<Pick>> {
        model::forward_pick(self, cfg, batch, out_rows)
    }
    fn sample(&mut self, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize], draws: &[RowDraw]) -> Result<Vec<Pick>> {
        model::forward_sample(self, cfg, batch, out_rows, draws)
    }
    fn samples(&self) -> bool {
        true
    }
    fn logits(&mut self, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize]) -> Result<Vec<f32>> {
        model::forward_logits(self, cfg, batch, out_rows)
    }
    fn summarizes(&self) -> bool {
        self.summarizes_rows()
    }
    fn tops(&mut self, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize]) -> Result<Vec<RowTop>> {
        model::forward_tops(self, cfg, batch, out_rows)
    }
    fn logit_rows(&mut self, rows: &[usize]) -> Result<Vec<f32>> {
        self.read_logit_rows(rows)
    }
    fn prefill(&mut self, cfg: &ModelConfig, batch: &StepBatch) -> Result<()> {
        model::forward_prefill(self, cfg, batch)
    }
}

/// A forward job that also returns the rank's CUDA graph counts as the forward left them.
fn counting_graphs<B: Measure, R>(
    forward: impl Fn(&mut B) -> Result<R> + Send + Sync + 'static,
) -> impl Fn(&mut B) -> Result<(R, Option<GraphSteps>)> + Send + Sync + 'static {
    move |b| forward(b).map(|r| (r, b.graph_steps()))
}

/// The forward's result, its graph counts kept in the group (read after each step by the
/// server's metrics, which then ask no rank); a failed forward's are forgotten.
fn keep_graphs<B: 'static, R>(ranks: &mut Ranks<B>, out: Result<(R, Option<GraphSteps>)>) -> Result<R> {
    match out {
        Ok((r, graphs)) => {
            ranks.set_graphs_after_forward(Some(graphs));
            Ok(r)
        }
        Err(e) => {
            ranks.set_graphs_after_forward(None);
            Err(e)
        }
    }
}

/// Rank 0's result of a job every rank ran.
fn first<R>(all: Result<Vec<R>>) -> Result<R> {
    all?.into_iter().next().ok_or_else(|| anyhow::anyhow!("an empty tensor-parallel group"))
}

/// Every rank runs the forward on the same batch; their picks agree, since the vocab-parallel
/// pick combines the same shares on every rank.
impl<B: Backend + Measure + 'static> Runner for Ranks<B> {
    fn label(&self) -> String {
        let names = self.all(|b| b.name()).unwrap_or_default();
        format!("tensor parallel over {} ranks: {}", self.size(), names.join("; "))
    }
    fn seq_capacity(&self) -> usize {
        self.all(|b| b.max_seq_len()).map(|v| v.into_iter().min().unwrap_or(0)).unwrap_or(0)
    }
    fn open_seq(&mut self, max_len: usize) -> Result<usize> {
        // Every rank's page pool has seen the same calls, so they hand out the same slot.
        let slots = self.try_all(move |b| b.alloc_seq(max_len))?;
        if let Some((rank, s)) = slots.iter().enumerate().find(|(_, s)| **s != slots[0]) {
            bail!("tensor-parallel rank {rank} reserved KV slot {s}, rank 0 slot {}", slots[0]);
        }
        Ok(slots[0])
    }
    fn close_seq(&mut self, slot: usize) {
        let _ = self.all(move |b| b.free_seq(slot));
    }
    fn pick(&mut self, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize]) -> Result<Vec<Pick>> {
        let (cfg, batch, rows) = (Arc::new(cfg.clone()), Arc::new(batch.clone()), Arc::new(out_rows.to_vec()));
        let out = self.agreed(counting_graphs(move |b| model::forward_pick(b, &cfg, &batch, &rows)));
        keep_graphs(self, out)
    }
    fn sample(&mut self, _cfg: &ModelConfig, _batch: &StepBatch, _out_rows: &[usize], _draws: &[RowDraw]) -> Result<Vec<Pick>> {
        bail!("tensor-parallel ranks hold vocabulary slices: sample from their gathered logits")
    }
    fn samples(&self) -> bool {
        false
    }
    fn logits(&mut self, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize]) -> Result<Vec<f32>> {
        let (cfg, batch, rows) = (Arc::new(cfg.clone()), Arc::new(batch.clone()), Arc::new(out_rows.to_vec()));
        let out = first(self.try_all(counting_graphs(move |b| model::forward_logits(b, &cfg, &batch, &rows))));
        keep_graphs(self, out)
    }
    fn summarizes(&self) -> bool {
        self.all(|b| b.summarizes_rows()).is_ok_and(|v| v.into_iter().all(|s| s))
    }
    fn tops(&mut self, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize]) -> Result<Vec<RowTop>> {
        // Every rank merges the same slices' summaries (or summarizes the same gathered rows):
        // rank 0's stand for all (NaN sums, which never compare equal, ruled out `agreed`).
        let (cfg, batch, rows) = (Arc::new(cfg.clone()), Arc::new(batch.clone()), Arc::new(out_rows.to_vec()));
        let out = first(self.try_all(counting_graphs(move |b| model::forward_tops(b, &cfg, &batch, &rows))));
        keep_graphs(self, out)
    }
    fn logit_rows(&mut self, rows: &[usize]) -> Result<Vec<f32>> {
        // Every rank takes part: its slices of the rows are gathered.
        let rows = Arc::new(rows.to_vec());
        first(self.try_all(move |b| b.read_logit_rows(&rows)))
    }
    fn prefill(&mut self, cfg: &ModelConfig, batch: &StepBatch) -> Result<()> {
        let (cfg, batch) = (Arc::new(cfg.clone()), Arc::new(batch.clone()));
        let out = self.agreed(counting_graphs(move |b| model::forward_prefill(b, &cfg, &batch)));
        keep_graphs(self, out)
    }
}
