//! The LLaDA2 forward, written once over [`Backend`].

use crate::backend::{Backend, Head, Linear, Norm, StepBatch};
use crate::config::ModelConfig;
use crate::decode::row_top::RowTop;
use crate::decode::sample::RowDraw;
use crate::decode::Pick;
use anyhow::Result;

/// How much of the last layer a forward needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LastLayer {
    /// All of it: its output feeds the final norm.
    Whole,
    /// Only its K/V store: a prefill reads nothing after the cache.
    KvOnly,
}

/// The residual stream after the last layer, and that layer's FFN output not yet added to it.
type Residual<A> = (A, Option<A>);

/// Run the batch through the layers, writing every layer's K/V to the cache. Returns the
/// residual stream with `LastLayer::Whole`, nothing with `LastLayer::KvOnly`.
fn run_layers<B: Backend>(b: &mut B, cfg: &ModelConfig, batch: &StepBatch, last: LastLayer) -> Result<Option<Residual<B::Act>>> {
    let mut x = b.embed(&batch.tokens)?;
    let mut pending: Option<B::Act> = None; // the last sub-block's output, not yet added to x
    for l in 0..cfg.num_hidden_layers {
        let _l = crate::nvtx::range_fmt(format_args!("layer {l}"));
        // The last layer's output is dropped once added (a MoE layer's may hold its expert slots).
        let h = b.add_rms_norm(&mut x, pending.take().as_ref(), Norm::Input(l))?;
        let attn = {
            let _a = crate::nvtx::range("attention");
            let q = b.qkv_rope_store(&h, l, batch)?;
            if last == LastLayer::KvOnly && l + 1 == cfg.num_hidden_layers {
                return Ok(None);
            }
            let o = b.attention(&q, l, batch)?;
            // Row-parallel: each rank holds its heads' share, summed over the ranks.
            b.linear_residual(&mut x, &o, Linear::AttnOut(l))?
        };
        let h = b.add_rms_norm(&mut x, attn.as_ref(), Norm::PostAttention(l))?;
        let _m = crate::nvtx::range(if cfg.is_moe_layer(l) { "moe" } else { "mlp" });
        pending = b.ffn_residual(&mut x, &h, l, batch)?;
    }
    Ok(Some((x, pending)))
}

/// Run the batch through every layer (writing its K/V to the cache) and return the
/// final-normed hidden states of `out_rows` only: the rows whose predictions are needed.
pub fn forward_hidden<B: Backend>(b: &mut B, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize]) -> Result<B::Act> {
    let _r = crate::nvtx::range("forward");
    let Some((x, pending)) = run_layers(b, cfg, batch, LastLayer::Whole)? else {
        anyhow::bail!("the layer stack returned no hidden states");
    };
    let mut rows = b.gather_rows(&x, out_rows)?;
    let last = match pending {
        Some(p) => Some(b.gather_rows(&p, out_rows)?),
        None => None,
    };
    b.add_rms_norm(&mut rows, last.as_ref(), Norm::Final)
}

/// Write the batch's K/V to the cache and nothing else (chunked prefill): no rows are
/// predicted, so the final norm, the lm_head and the last layer past its K/V store are skipped.
pub fn forward_prefill<B: Backend>(b: &mut B, cfg: &ModelConfig, batch: &StepBatch) -> Result<()> {
    let _r = crate::nvtx::range("prefill");
    run_layers(b, cfg, batch, LastLayer::KvOnly).map(|_| ())
}

/// One step's forward through the lm_head (`head`), its results left with the backend; the
/// backend may replay a recording of an earlier forward of the same shape (CUDA graphs).
fn step_head<B: Backend>(b: &mut B, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize], head: Head) -> Result<()> {
    b.step_forward(batch, out_rows, head, &mut |b| {
        let h = forward_hidden(b, cfg, batch, out_rows)?;
        let _r = crate::nvtx::range("lm_head");
        b.head(&h, head)
    })
}

/// `out_rows` and, up to the count the backend computes ([`Backend::padded_out_rows`]), copies
/// of the last; the forward functions drop the copies' results.
fn padded<B: Backend>(b: &B, batch: &StepBatch, out_rows: &[usize]) -> Vec<usize> {
    let mut rows = out_rows.to_vec();
    if let Some(&last) = out_rows.last() {
        rows.resize(b.padded_out_rows(batch, out_rows.len()).max(out_rows.len()), last);
    }
    rows
}

/// The results of a head over `padded` rows (the same count of values each) cut to those of the
/// first `rows`.
fn unpadded<T>(mut v: Vec<T>, rows: usize, padded: usize) -> Result<Vec<T>> {
    if padded == rows {
        return Ok(v);
    }
    if !v.len().is_multiple_of(padded) {
        anyhow::bail!("the head returned {} values for {padded} rows", v.len());
    }
    v.truncate(v.len() / padded * rows);
    Ok(v)
}

/// Greedy picks (token, probability) for `out_rows`.
pub fn forward_pick<B: Backend>(b: &mut B, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize]) -> Result<Vec<Pick>> {
    let rows = padded(b, batch, out_rows);
    step_head(b, cfg, batch, &rows, Head::Pick)?;
    unpadded(b.read_picks()?, out_rows.len(), rows.len())
}

/// Per output row a draw under its own knobs (`draws`, one per row of `out_rows`), made by the
/// backend where the logits are.
pub fn forward_sample<B: Backend>(
    b: &mut B,
    cfg: &ModelConfig,
    batch: &StepBatch,
    out_rows: &[usize],
    draws: &[RowDraw],
) -> Result<Vec<Pick>> {
    if draws.len() != out_rows.len() {
        anyhow::bail!("{} draws for {} output rows", draws.len(), out_rows.len());
    }
    let rows = padded(b, batch, out_rows);
    // The padding's rows are skipped: no pass over their logits.
    let mut all = draws.to_vec();
    all.resize(rows.len(), RowDraw { skip: true, ..RowDraw::GREEDY });
    b.set_draws(&all)?;
    step_head(b, cfg, batch, &rows, Head::Sample)?;
    unpadded(b.read_picks()?, out_rows.len(), rows.len())
}

/// Per row of `out_rows` its summary (the best entries, max and sum of exp); the whole rows
/// stay with the backend for [`Backend::read_logit_rows`] until the next forward.
pub fn forward_tops<B: Backend>(b: &mut B, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize]) -> Result<Vec<RowTop>> {
    let rows = padded(b, batch, out_rows);
    step_head(b, cfg, batch, &rows, Head::Top)?;
    unpadded(b.read_tops()?, out_rows.len(), rows.len())
}

/// Full logits for `out_rows`, `[out_rows.len() * vocab]`.
pub fn forward_logits<B: Backend>(b: &mut B, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize]) -> Result<Vec<f32>> {
    let rows = padded(b, batch, out_rows);
    step_head(b, cfg, batch, &rows, Head::Logits)?;
    unpadded(b.read_logits()?, out_rows.len(), rows.len())
}
