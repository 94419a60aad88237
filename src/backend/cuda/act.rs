//! Device activations and their host conversions (tests, tools).

use super::CudaBackend;
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;
use std::cell::Cell;

/// A device activation `[rows, cols]`, row-major.
pub struct CudaAct {
    pub rows: usize,
    pub cols: usize,
    pub data: ActData,
}

pub enum ActData {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<u16>),
    /// A MoE layer's output not yet combined ([`MoeSlots`]): the next layer's input norm sums it
    /// on the way (add_moe_rms_norm); any other reader combines it first ([`CudaBackend::combined`]).
    MoeSlots(MoeSlots),
    /// A MoE layer's post-attention normed rows left for its router to compute as it routes them
    /// (CudaOptions::route_norm): moe_route writes them to `out`, which the expert GEMMs read.
    /// Any other reader runs the norm first ([`CudaBackend::run_route_norm`]).
    RouteNormed(RouteNormed),
}

/// The post-attention norm of [`ActData::RouteNormed`] rows: bf16(residual / rms(residual) * w)
/// into `out`, by the MoE layer's router or on its own. `residual` is the forward's residual
/// stream, which nothing writes between that norm and the router (the attention's output is in
/// it already: the norm adds no delta).
pub struct RouteNormed {
    /// The MoE layer whose router takes the norm (the norm decided it: route_takes_norm).
    pub(super) layer: usize,
    pub(super) out: CudaSlice<u16>,
    pub(super) residual: u64,
    pub(super) w: u64,
    /// Whether a launch that computes `out` has been issued (the router's or the norm's own).
    pub(super) issued: Cell<bool>,
}

/// A MoE layer's output as its expert GEMMs left it: per token, `topk` weighted bf16 rows of
/// `slot_out` (through `tok_slot`, in k order), plus the shared expert's output `shared` where it
/// ran beside the routed experts.
pub struct MoeSlots {
    pub(super) slot_out: CudaSlice<u16>,
    pub(super) tok_slot: CudaSlice<i32>,
    pub(super) topk: usize,
    pub(super) shared: Option<CudaSlice<f32>>,
    /// The layer's other buffers, freed with these slots (moe.rs, MoeScratch).
    pub(super) _scratch: Box<super::moe::MoeScratch>,
}

impl CudaBackend {
    pub fn act_from_f32(&self, rows: usize, cols: usize, v: &[f32]) -> Result<CudaAct> {
        assert_eq!(v.len(), rows * cols);
        Ok(CudaAct { rows, cols, data: ActData::F32(self.upload(v, "an f32 activation")?) })
    }

    /// Rounds to bf16.
    pub fn act_from_f32_as_bf16(&self, rows: usize, cols: usize, v: &[f32]) -> Result<CudaAct> {
        assert_eq!(v.len(), rows * cols);
        let bits: Vec<u16> = v.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect();
        Ok(CudaAct { rows, cols, data: ActData::Bf16(self.upload(&bits, "a bf16 activation")?) })
    }

    pub fn act_to_f32(&self, a: &CudaAct) -> Result<Vec<f32>> {
        Ok(match &a.data {
            ActData::F32(s) => self.download(s, "an activation")?,
            ActData::Bf16(s) => self.download(s, "an activation")?.into_iter().map(|b| half::bf16::from_bits(b).to_f32()).collect(),
            ActData::MoeSlots(m) => self.download(&self.combined(m, a.rows)?, "an activation")?,
            ActData::RouteNormed(r) => {
                if !r.issued.get() {
                    self.run_route_norm(r, a.rows, a.cols)?;
                }
                self.download(&r.out, "an activation")?.into_iter().map(|b| half::bf16::from_bits(b).to_f32()).collect()
            }
        })
    }

    pub(super) fn f32_of<'a>(&self, a: &'a CudaAct, op: &str) -> Result<&'a CudaSlice<f32>> {
        match &a.data {
            ActData::F32(s) => Ok(s),
            ActData::Bf16(_) => bail!("{op}: expected an f32 activation, got bf16"),
            ActData::MoeSlots(_) => bail!("{op}: expected an f32 activation, got uncombined MoE slots"),
            ActData::RouteNormed(_) => bail!("{op}: expected an f32 activation, got rows left for the router to normalize"),
        }
    }

    pub(super) fn bf16_of<'a>(&self, a: &'a CudaAct, op: &str) -> Result<&'a CudaSlice<u16>> {
        match &a.data {
            ActData::Bf16(s) => Ok(s),
            ActData::F32(_) => bail!("{op}: expected a bf16 activation, got f32"),
            ActData::MoeSlots(_) => bail!("{op}: expected a bf16 activation, got uncombined MoE slots"),
            // Only the MoE layer reads them (CudaBackend::ffn), or a host conversion.
            ActData::RouteNormed(_) => bail!("{op}: expected a bf16 activation, got rows left for the MoE layer's router to normalize"),
        }
    }

    /// `a` in f32, combining a MoE layer's slots in place where it holds them (readers other
    /// than the next input norm: the all-reduce, the last layer's row gather).
    pub(super) fn make_f32(&self, a: &mut CudaAct) -> Result<()> {
        if let ActData::MoeSlots(m) = &a.data {
            a.data = ActData::F32(self.combined(m, a.rows)?);
        }
        Ok(())
    }
}
