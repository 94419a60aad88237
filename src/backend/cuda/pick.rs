//! The greedy pick after the lm_head (csrc/lm_head.cu, `row_argmax` and its cluster forms): per
//! row its argmax and softmax probability, a few bytes a row back to the host; on Hopper the
//! lm_head GEMM with the pick in its epilogue instead (`lm_head_pick`, then
//! `lm_head_pick_merge`), which never writes the logits. CPU twin: `decode::sample::pick_row`.

use super::kernels::{params::*, Kernel};
use super::CudaBackend;
use crate::decode::Pick;
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;
use std::ops::Range;

/// CTAs a logits row takes (a thread block cluster beyond one): the most of 8, 4 and 2 with
/// which the rows' CTAs stay within two an SM, else one. One CTA a row left most SMs idle at
/// small batches (a batch-1 step's 32 rows on 32 SMs, ~40 us for 20 MB), while from 2 x SMs rows
/// on the rows alone fill the GPU twice.
pub(super) fn pick_cluster(rows: usize, sm_count: usize) -> usize {
    [8, 4, 2].into_iter().find(|&c| rows * c <= 2 * sm_count).unwrap_or(1)
}

impl CudaBackend {
    /// The greedy picks of host rows `logits` (`[rows, vocab]`) made on the device: one upload,
    /// one launch, `rows` picks back (tests, benchmarks).
    pub fn pick_host_logits(&self, logits: &[f32], rows: usize) -> Result<Vec<Pick>> {
        if rows == 0 || logits.is_empty() || !logits.len().is_multiple_of(rows) {
            bail!("pick_host_logits: {} logits do not make {rows} rows", logits.len());
        }
        let dev = self.upload(logits, "logits")?;
        let token = self.k.alloc::<u32>(rows, "picked tokens")?;
        let prob = self.alloc_f32(rows, "pick probabilities")?;
        let p = self.pick_params(self.p(&dev), (&token, &prob, 0), rows, 0..logits.len() / rows);
        self.launch_pick(&p)?;
        self.download_picks(&token, &prob)
    }

    /// The pick's parameters: `rows` rows of `logits` (0 where lm_head_pick makes them) over
    /// the vocabulary's ids `vocab` (this rank's slice), into `out`'s picked tokens, their
    /// probabilities and the ranks' shares (0: none).
    pub(super) fn pick_params(
        &self,
        logits: u64,
        out: (&CudaSlice<u32>, &CudaSlice<f32>, u64),
        rows: usize,
        vocab: Range<usize>,
    ) -> PickParams {
        let (token, prob, share) = out;
        PickParams {
            logits,
            token: self.p(token),
            prob: self.p(prob),
            share,
            rows: rows as i32,
            vocab: vocab.len() as i32,
            token_base: vocab.start as i32,
        }
    }

    /// Picks from the device's tokens and probabilities (the pick's and the sampler's outputs).
    pub(super) fn download_picks(&self, token: &CudaSlice<u32>, prob: &CudaSlice<f32>) -> Result<Vec<Pick>> {
        let t = self.download(token, "picked tokens")?;
        let pr = self.download(prob, "pick probabilities")?;
        Ok(t.into_iter().zip(pr).map(|(token, prob)| Pick { token, prob }).collect())
    }

    /// The greedy pick of `rows` bf16 rows `x` (`[rows][k]`) through lm_head_pick (the GEMM with
    /// the pick in its epilogue, over `map`'s vocabulary) and lm_head_pick_merge, into the
    /// outputs `pick` names (its logits unused). Only launches: a CUDA graph can hold them.
    pub(super) fn launch_fused_pick(&self, x: &CudaSlice<u16>, map: &CudaSlice<u8>, k: usize, pick: PickParams) -> Result<()> {
        let (rows, vocab) = (pick.rows.max(0) as usize, pick.vocab.max(0) as usize);
        if rows == 0 {
            return Ok(());
        }
        let col_tiles = vocab.div_ceil(DENSE_WS_COLS);
        let parts = self.alloc_f32(rows * col_tiles * 3, "lm_head_pick parts")?;
        let p =
            LmHeadPickParams { x: self.p(x), w_map: self.p(map), parts: self.p(&parts), pick, k: k as i32, col_tiles: col_tiles as i32 };
        self.launch_dense_tiles(Kernel::LmHeadPick, rows.div_ceil(DENSE_WS_ROWS) * col_tiles, false, &p)?;
        let merge_ctas = rows.div_ceil(LM_PICK_MERGE_WARPS) as u32;
        self.k.launch(Kernel::LmHeadPickMerge, (merge_ctas, 1, 1), (LM_PICK_MERGE_WARPS * WARP) as u32, &p)?;
        Ok(())
    }

    /// Only the launch, into the buffers `p` names (a CUDA graph can hold it): one CTA a row, or a
    /// cluster of [`pick_cluster`] CTAs a row on Hopper.
    pub(super) fn launch_pick(&self, p: &PickParams) -> Result<()> {
        // No rows: no launch, as before the clusters (Kernels::launch skips an empty grid).
        if p.rows < 0 || p.vocab <= 0 {
            bail!("row_argmax: {} rows of {} logits", p.rows, p.vocab);
        }
        let rows = p.rows as usize;
        let c = if self.wgmma { pick_cluster(rows, self.sm_count) } else { 1 };
        let kernel = match c {
            8 => Kernel::RowArgmaxC8,
            4 => Kernel::RowArgmaxC4,
            2 => Kernel::RowArgmaxC2,
            _ => Kernel::RowArgmax,
        };
        self.k.launch(kernel, ((rows * c) as u32, 1, 1), PICK_THREADS as u32, p)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::pick_cluster;

    #[test]
    fn pick_cluster_fills_the_gpu_with_rows_or_cluster_ctas() {
        let sms = 132;
        assert_eq!(pick_cluster(1, sms), 8);
        assert_eq!(pick_cluster(32, sms), 8); // batch 1: 256 CTAs
        assert_eq!(pick_cluster(33, sms), 8);
        assert_eq!(pick_cluster(34, sms), 4);
        assert_eq!(pick_cluster(64, sms), 4);
        assert_eq!(pick_cluster(128, sms), 2);
        assert_eq!(pick_cluster(132, sms), 2);
        assert_eq!(pick_cluster(133, sms), 1);
        assert_eq!(pick_cluster(2048, sms), 1);
    }
}
