//! Device activations and their host conversions (tests, tools).

use super::CudaBackend;
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

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
        })
    }

    pub(super) fn f32_of<'a>(&self, a: &'a CudaAct, op: &str) -> Result<&'a CudaSlice<f32>> {
        match &a.data {
            ActData::F32(s) => Ok(s),
            ActData::Bf16(_) => bail!("{op}: expected an f32 activation, got bf16"),
            ActData::MoeSlots(_) => bail!("{op}: expected an f32 activation, got uncombined MoE slots"),
        }
    }

    pub(super) fn bf16_of<'a>(&self, a: &'a CudaAct, op: &str) -> Result<&'a CudaSlice<u16>> {
        match &a.data {
            ActData::Bf16(s) => Ok(s),
            ActData::F32(_) => bail!("{op}: expected a bf16 activation, got f32"),
            ActData::MoeSlots(_) => bail!("{op}: expected a bf16 activation, got uncombined MoE slots"),
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
