//! A MoE layer's weights asked into L2 from the side stream (CudaOptions::l2_prefetch;
//! csrc/l2_prefetch.cu). At small batches a layer's attention chain (input norm, QKV, RoPE,
//! attention, output projection, norm, router: ~49 us a layer at batch 1 on an H200) is latency
//! bound and leaves DRAM idle, while the GEMMs in it and the shared expert after it read ~28 MB
//! of weights a layer at mini's shape, and the routed experts after it ~500 MB at batch 1.
//!
//! [`L2Prefetch::Weights`]: at the layer's input norm (before its launch) the side stream asks
//! for the QKV, output-projection, router and shared-expert weights. [`L2Prefetch::Experts`]
//! adds, once the norm is out, the router over the normed rows (the attention's input: the
//! layer's post-attention rows differ from them by the attention's output) and the gate and up
//! matrices of the experts it picks, lowest id first (the expert GEMMs' first items), up to a
//! budget that the L2 holds. The main stream joins the side stream at the next layer's input
//! norm or the final norm, long after the prefetches were issued (a bulk prefetch completes
//! nothing: the kernel only issues them).

use super::kernels::{params::*, Kernel};
use super::moe::PredictedPicks;
use super::weights::{ExpertMatrix, Ffn};
use super::CudaBackend;
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

/// What a MoE layer asks L2 for from the side stream (CudaOptions::l2_prefetch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum L2Prefetch {
    #[default]
    Off,
    /// The layer's QKV, output-projection, router and shared-expert weights.
    Weights,
    /// Those, and the gate and up matrices of the experts the router picks over the layer's
    /// attention input, lowest id first, up to `mb` megabytes.
    Experts { mb: usize },
}

impl std::str::FromStr for L2Prefetch {
    type Err = String;

    /// `off`, `weights`, `experts` (24 MB of experts) or `experts:MB`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "off" => Ok(L2Prefetch::Off),
            None if s == "weights" => Ok(L2Prefetch::Weights),
            None if s == "experts" => Ok(L2Prefetch::Experts { mb: DEFAULT_EXPERT_MB }),
            Some(("experts", mb)) => mb
                .parse()
                .ok()
                .filter(|&mb| mb > 0)
                .map(|mb| L2Prefetch::Experts { mb })
                .ok_or_else(|| format!("experts:MB wants a positive number of megabytes, got {mb:?}")),
            _ => Err(format!("expected off, weights, experts or experts:MB, got {s:?}")),
        }
    }
}

/// The experts' megabytes of `experts` without a budget: with the shared expert's ~6 MB and
/// the output projection's ~8 MB well within the H200's 50 MB L2.
const DEFAULT_EXPERT_MB: usize = 24;

/// Steps of at most this many rows prefetch (batch 16 of 32-token blocks): beyond, the layer's
/// GEMMs are bound by their arithmetic, not by their first reads.
pub(super) const L2_PREFETCH_MAX_ROWS: usize = 512;

/// `[addr, addr + bytes)` shrunk to 16-byte boundaries, as `cp.async.bulk.prefetch` needs.
fn aligned_range(addr: u64, bytes: u64) -> (u64, u64) {
    let start = addr.next_multiple_of(16);
    let end = (addr + bytes) & !15;
    (start, end.saturating_sub(start))
}

/// An L2 prefetch on the side stream, not yet joined, and the buffers it reads.
#[derive(Default)]
pub(super) struct PrefetchState {
    owed: bool,
    picks: Option<PredictedPicks>,
}

impl CudaBackend {
    /// Whether layer `layer`'s input norm at `rows` rows prefetches. Not at the last layer: a
    /// prefill's forward ends inside it, past its K/V store, with no norm after to join at.
    fn prefetches(&self, layer: usize, rows: usize) -> bool {
        self.opts.l2_prefetch != L2Prefetch::Off
            && rows <= L2_PREFETCH_MAX_ROWS
            && layer + 1 < self.w.layers.len()
            && matches!(self.w.layers[layer].ffn, Ffn::Moe(_))
    }

    /// At layer `layer`'s input norm, before its launch: the previous prefetch joined, then this
    /// layer's weights asked for on the side stream, and (Experts) the prediction's buffers made.
    pub(super) fn prefetch_before_norm(&mut self, layer: usize, rows: usize) -> Result<()> {
        self.join_prefetch()?;
        if !self.prefetches(layer, rows) {
            return Ok(());
        }
        let l = &self.w.layers[layer];
        let Ffn::Moe(m) = &l.ffn else { return Ok(()) };
        let mut ranges = vec![(self.p(&l.qkv), l.qkv.len()), (self.p(&l.dense), l.dense.len()), (self.p(&m.router), m.router.len())];
        if let Some(s) = &m.shared {
            ranges.push((self.p(&s.gate_up), s.gate_up.len()));
            ranges.push((self.p(&s.down), s.down.len()));
        }
        let p = self.prefetch_params(&ranges.iter().map(|&(a, n)| (a, 2 * n as u64)).collect::<Vec<_>>())?;
        // Allocated now, on the main stream: between the norm and the QKV GEMM an allocation would
        // be a node of the step's graph; freed at the join.
        if matches!(self.opts.l2_prefetch, L2Prefetch::Experts { .. }) && self.predicts_picks(rows) {
            self.prefetch.picks = Some(self.prediction_buffers(rows)?);
        }
        let forked =
            self.k.beside(|| self.k.launch(Kernel::L2Prefetch, (L2_PREFETCH_CTAS as u32, 1, 1), L2_PREFETCH_THREADS as u32, &p))?;
        self.prefetch.owed |= forked;
        Ok(())
    }

    /// After layer `layer`'s input norm was launched (its normed rows `x`): with
    /// [`L2Prefetch::Experts`], the router over them and the prefetch of the experts it picks, on
    /// the side stream.
    pub(super) fn prefetch_after_norm(&mut self, layer: usize, x: &CudaSlice<u16>, rows: usize) -> Result<()> {
        let (L2Prefetch::Experts { mb }, Some(picks)) = (self.opts.l2_prefetch, &self.prefetch.picks) else { return Ok(()) };
        let Ffn::Moe(m) = &self.w.layers[layer].ffn else { return Ok(()) };
        let (gate, up, expert_bytes) = match (&m.gate, &m.up) {
            (ExpertMatrix::Bf16(g), ExpertMatrix::Bf16(u)) => (self.p(g), self.p(u), 2 * g.len() as u64),
            (ExpertMatrix::Fp8 { codes: g, .. }, ExpertMatrix::Fp8 { codes: u, .. }) => (self.p(g), self.p(u), g.len() as u64),
            _ => bail!("layer {layer}: gate and up experts of different kinds"),
        };
        let experts = self.cfg.num_experts;
        let expert_bytes = expert_bytes / experts as u64;
        if experts > L2_PREFETCH_MAX_E || ![expert_bytes, gate, up].iter().all(|v| v.is_multiple_of(16)) {
            return Ok(()); // not a layout the bulk prefetches can take whole; nothing to predict for
        }
        let mut p = self.prefetch_params(&[])?;
        p.ids = self.p(picks.ids());
        p.picks = (rows * self.cfg.num_experts_per_tok) as i32;
        p.experts = experts as i32;
        p.gate = gate;
        p.up = up;
        p.expert_bytes = expert_bytes;
        p.max_experts = ((mb << 20) as u64 / (2 * expert_bytes)).max(1) as i32;
        let forked = self.k.beside(|| -> Result<()> {
            self.launch_prediction(m, x, rows, picks)?;
            Ok(self.k.launch(Kernel::L2Prefetch, (L2_PREFETCH_CTAS as u32, 1, 1), L2_PREFETCH_THREADS as u32, &p)?)
        })?;
        self.prefetch.owed |= forked;
        Ok(())
    }

    /// The fixed ranges (address, bytes) of a prefetch, no experts.
    fn prefetch_params(&self, ranges: &[(u64, u64)]) -> Result<L2PrefetchParams> {
        if ranges.len() > L2_PREFETCH_RANGES {
            bail!("{} ranges to prefetch, at most {L2_PREFETCH_RANGES}", ranges.len());
        }
        let mut p = L2PrefetchParams::default();
        for (i, &(addr, bytes)) in ranges.iter().enumerate() {
            (p.addr[i], p.bytes[i]) = aligned_range(addr, bytes);
        }
        Ok(p)
    }

    /// The main stream joins an outstanding prefetch's side stream (a CUDA graph capture must
    /// join every stream it forked before it ends), and the prediction's buffers go.
    pub(super) fn join_prefetch(&mut self) -> Result<()> {
        if std::mem::take(&mut self.prefetch.owed) {
            self.k.join_side()?;
        }
        self.prefetch.picks = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{aligned_range, L2Prefetch};

    #[test]
    fn prefetch_ranges_shrink_to_16_byte_boundaries() {
        assert_eq!(aligned_range(256, 1000), (256, 992));
        assert_eq!(aligned_range(250, 40), (256, 32));
        assert_eq!(aligned_range(250, 10), (256, 0));
    }

    #[test]
    fn prefetch_modes_parse() {
        assert_eq!("off".parse(), Ok(L2Prefetch::Off));
        assert_eq!("weights".parse(), Ok(L2Prefetch::Weights));
        assert_eq!("experts".parse(), Ok(L2Prefetch::Experts { mb: 24 }));
        assert_eq!("experts:40".parse(), Ok(L2Prefetch::Experts { mb: 40 }));
        assert!("experts:0".parse::<L2Prefetch>().is_err());
        assert!("experts:x".parse::<L2Prefetch>().is_err());
        assert!("all".parse::<L2Prefetch>().is_err());
    }
}
