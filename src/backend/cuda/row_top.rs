//! The logits row summaries (csrc/row_top_k.cu, `row_top_k`) JointThresholdInDel reads instead
//! of whole rows: per row its ROW_TOP_K best entries, max and sum of exp, `2K + 2` floats a row
//! back to the host. CPU twin: `decode::row_top::row_top`.

use super::error::CudaError;
use super::kernels::{params::*, Kernel};
use super::CudaBackend;
use crate::decode::row_top::{self, RowTop};
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

// The kernel's layout is the host's (both from csrc/params.h).
const _: () = assert!(ROW_TOP_K == row_top::ROW_TOP_K && ROW_TOP_SUMMARY == row_top::ROW_TOP_SUMMARY);

impl CudaBackend {
    /// The summaries of host rows `logits` (`[rows, vocab]`) made on the device: one upload,
    /// one launch, `rows` summaries back (tests, benchmarks).
    pub fn row_tops_host(&self, logits: &[f32], rows: usize) -> Result<Vec<RowTop>> {
        if rows == 0 || logits.is_empty() || !logits.len().is_multiple_of(rows) {
            bail!("row_tops_host: {} logits do not make {rows} rows", logits.len());
        }
        let dev = self.upload(logits, "logits")?;
        let summary = self.alloc_f32(rows * ROW_TOP_SUMMARY, "logits row summaries")?;
        self.launch_row_top_k(&dev, rows, logits.len() / rows, 0, &summary)?;
        Ok(self.download(&summary, "logits row summaries")?.chunks_exact(ROW_TOP_SUMMARY).map(RowTop::from_wire).collect())
    }

    /// Only the launch, into the caller's device buffers (a CUDA graph can hold it): the first
    /// `rows * vocab` of `logits`, whose first token id is `token_base`; `rows` summaries out.
    pub(super) fn launch_row_top_k(
        &self,
        logits: &CudaSlice<f32>,
        rows: usize,
        vocab: usize,
        token_base: usize,
        summary: &CudaSlice<f32>,
    ) -> Result<()> {
        // Ids cross as floats: exact below 2^24.
        if vocab == 0 || token_base + vocab > 1 << 24 || rows > i32::MAX as usize {
            bail!("row_top_k: vocab {vocab} from token {token_base} must end within 2^24, rows {rows} below 2^31");
        }
        if logits.len() < rows * vocab || summary.len() < rows * ROW_TOP_SUMMARY {
            bail!("row_top_k: buffers too small for {rows} rows of {vocab} (logits {}, summaries {})", logits.len(), summary.len());
        }
        let p = RowTopKParams {
            logits: self.p(logits),
            summary: self.p(summary),
            rows: rows as i32,
            vocab: vocab as i32,
            token_base: token_base as i32,
        };
        self.k.launch(Kernel::RowTopK, (rows as u32, 1, 1), TOP_K_THREADS as u32, &p)?;
        Ok(())
    }

    /// Whole rows `rows` of this rank's `[n, vocab slice]` logits on the device, `[rows.len(),
    /// vocab slice]` on the host.
    pub(super) fn download_rows(&self, logits: &CudaSlice<f32>, n: usize, rows: &[usize]) -> Result<Vec<f32>> {
        let w = logits.len().checked_div(n).unwrap_or(0);
        let mut out = Vec::with_capacity(rows.len() * w);
        for &r in rows {
            let Some(view) = logits.try_slice(r * w..(r + 1) * w).filter(|_| r < n) else {
                bail!("reading logits row {r} of {n}");
            };
            out.extend(
                self.waiting(|| self.k.stream.clone_dtoh(&view)).map_err(CudaError::driver(|| format!("downloading logits row {r}")))?,
            );
        }
        Ok(out)
    }
}
