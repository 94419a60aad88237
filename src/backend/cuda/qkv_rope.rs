//! The QKV projection with qk_norm_rope_store's work in its epilogue (csrc/qkv_rope.cu,
//! `qkv_rope_store_r64` / `_r128`, Hopper): the per-head QK norm, the partial RoPE and the K/V
//! stores run on the GEMM's f32 sums in registers, so the QKV rows are never written or read
//! back. Where it does not apply (no wgmma, a head dim other than 128, another rotation, fewer
//! rows than `CudaOptions::fused_qkv_rope_min_rows`) a layer takes cuBLAS's QKV and
//! qk_norm_rope_store (attention.rs). CPU twin: the QKV projection, then qk_norm_rope_store.

use super::act::{ActData, CudaAct};
use super::kernels::{params::*, Kernel};
use super::CudaBackend;
use crate::backend::StepBatch;
use anyhow::Result;
use cudarc::driver::CudaSlice;

/// How `units` units of `ktiles` k-steps spread over `resident` persistent CTAs: `(tail, split)`,
/// the last `tail` units split `split` ways over k. A unit is a fixed block of work, so units
/// past a multiple of `resident` make a last round in which most CTAs idle (batch 64 at mini's
/// shape: 192 units, 132 CTAs, a second round of 60); split, that round's CTAs each take a
/// part of its units' k. At most QKV_ROPE_MAX_SPLIT ways (each split's sums cross the L2 twice)
/// and only where at least two fit.
pub(super) fn qkv_rope_split(units: usize, resident: usize, ktiles: usize) -> (usize, usize) {
    let tail = if units <= resident { units } else { units % resident };
    if tail == 0 {
        return (0, 1);
    }
    let split = (resident / tail).min(QKV_ROPE_MAX_SPLIT).min(ktiles);
    if split < 2 {
        (0, 1)
    } else {
        (tail, split)
    }
}

/// What the fused kernel needs at load: its form for the model's rotation, per layer its QKV
/// weights' TMA map, and the arrival counts of split units (zeroed once; each launch leaves them
/// zero).
pub(super) struct QkvRopeMaps {
    kernel: Kernel,
    maps: Vec<CudaSlice<u8>>,
    arrivals: CudaSlice<i32>,
}

impl CudaBackend {
    /// The fused kernel for this model's rotation, where it applies: head dim 128 (a column tile
    /// is two heads), rotary dim 64 or 128 (a rotated column's partner in the same thread).
    fn qkv_rope_kernel(&self) -> Option<Kernel> {
        if self.cfg.head_dim() != QKV_ROPE_HEAD_DIM {
            return None;
        }
        match self.cfg.rotary_dim() {
            64 => Some(Kernel::QkvRopeStoreR64),
            128 => Some(Kernel::QkvRopeStoreR128),
            _ => None,
        }
    }

    /// The maps and counts of `CudaOptions::fused_qkv_rope`, where the kernel can run for every
    /// layer; `None` otherwise.
    pub(super) fn qkv_rope_maps(&self) -> Result<Option<QkvRopeMaps>> {
        let Some(kernel) = self.qkv_rope_kernel().filter(|_| self.opts.fused_qkv_rope) else {
            return Ok(None);
        };
        let (n, k) = (self.cfg.qkv_rows(), self.cfg.hidden_size);
        let mut maps = Vec::with_capacity(self.w.layers.len());
        for l in &self.w.layers {
            match self.dense_tiles_map(self.p(&l.qkv), n, k, "a QKV tensor map")? {
                Some(m) => maps.push(m),
                None => return Ok(None),
            }
        }
        let mut arrivals = self.k.alloc::<i32>(self.sm_count * DENSE_WS_WGS, "qkv_rope_store arrivals")?;
        self.k
            .stream
            .memset_zeros(&mut arrivals)
            .map_err(super::error::CudaError::driver(|| "zeroing qkv_rope_store's arrivals".into()))?;
        Ok(Some(QkvRopeMaps { kernel, maps, arrivals }))
    }

    /// Whether layers of `rows` rows take the fused kernel.
    pub fn fuses_qkv_rope(&self, rows: usize) -> bool {
        self.qkv_rope.is_some() && rows >= self.opts.fused_qkv_rope_min_rows && !self.streams(rows, self.cfg.hidden_size, false)
    }

    /// Layer `layer`'s q for the normed rows `h`, its K and V into the step's pages, by the fused
    /// kernel; `None` where it does not take these rows (then the caller runs the two steps).
    pub(super) fn fused_qkv_rope(&mut self, h: &CudaAct, layer: usize, batch: &StepBatch) -> Result<Option<CudaAct>> {
        // Every position in the angle table: the kernel has no f64 fallback (qkv_rope.cu).
        let in_table = batch.runs.iter().all(|r| r.start + r.len <= super::attention::rope_table_positions(&self.cfg));
        let (kernel, w_map, arrivals) = match &self.qkv_rope {
            Some(f) if in_table && self.fuses_qkv_rope(h.rows) => (f.kernel, self.p(&f.maps[layer]), self.p(&f.arrivals)),
            _ => return Ok(None),
        };
        self.layout(batch)?;
        let (rows, k) = (h.rows, h.cols);
        let (nh, d) = (self.cfg.num_attention_heads, self.cfg.head_dim());
        let x = self.bf16_of(h, "qkv_rope_store")?;
        let (q, rope) = self.rope_outputs(layer, rows, 0)?;
        let col_tiles = self.cfg.qkv_rows().div_ceil(DENSE_WS_COLS);
        let units = rows.div_ceil(DENSE_WS_ROWS) * col_tiles;
        let resident = self.dense_tiles_resident(kernel)?;
        let (tail, split) = qkv_rope_split(units, resident, k.div_ceil(GEMM_BK));
        let partials = self.alloc_f32((tail * split * DENSE_WS_WGS * QKV_ROPE_PARTIAL_FLOATS).max(1), "qkv_rope_store partials")?;
        let p = QkvRopeParams {
            x: self.p(x),
            w_map,
            rope,
            k: k as i32,
            units: units as i32,
            tail: tail as i32,
            split: split as i32,
            partials: self.p(&partials),
            arrivals,
        };
        // A programmatic dependent of the input norm: the kernel asks for its first stages'
        // weights before it waits for x (csrc/qkv_rope.cu).
        self.launch_dense_tiles(kernel, units - tail + tail * split, true, &p)?;
        Ok(Some(CudaAct { rows, cols: nh * d, data: ActData::Bf16(q) }))
    }
}

#[cfg(test)]
mod tests {
    use super::qkv_rope_split;

    #[test]
    fn the_last_round_is_split_over_k() {
        // Mini's QKV on 132 SMs (12 column tiles, 32 k-steps): batch 64's 192 units leave 60 for a
        // second round, split in two; batch 128's 384 leave 120, which fill it; batch 16's 48
        // units all split in two.
        assert_eq!(qkv_rope_split(192, 132, 32), (60, 2));
        assert_eq!(qkv_rope_split(384, 132, 32), (0, 1));
        assert_eq!(qkv_rope_split(48, 132, 32), (48, 2));
        assert_eq!(qkv_rope_split(264, 132, 32), (0, 1));
        // Few units: as many splits as fit, at most QKV_ROPE_MAX_SPLIT, at most a k-step each.
        assert_eq!(qkv_rope_split(12, 132, 32), (12, 4));
        assert_eq!(qkv_rope_split(12, 132, 3), (12, 3));
        assert_eq!(qkv_rope_split(1, 132, 1), (0, 1));
        assert_eq!(qkv_rope_split(140, 132, 32), (8, 4));
    }
}
