//! The device sampler (csrc/sampler.cu, `sample_rows`): temperature, top-k, top-p and min-p
//! draws on the GPU, so that a sampled step copies back a token and a probability a row, never
//! its logits. A row is one thread block cluster of SAMPLE_CLUSTER CTAs (sm_90). CPU twin:
//! `decode::sample::sample_row_u`, given the same uniform draw. The rows are f32, or bf16 where a
//! sampled step's lm_head writes them so (`CudaOptions::sample_bf16`, `sample_rows_bf16`).

use super::kernels::{params::*, Kernel};
use super::CudaBackend;
use crate::decode::sample::{RowDraw, Sampling};
use crate::decode::Pick;
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

// A skipped row's token: the kernel's and the CPU twin's are one value.
const _: () = assert!(SAMPLE_SKIPPED == crate::decode::sample::SKIPPED.token as usize);

impl RowSampling {
    /// A row drawn under `s` with the uniform `u` in (0, 1). The kernel reads `u` as an f32:
    /// it is rounded there, and kept below 1 (1 itself would fall past the last kept token).
    pub fn new(s: &Sampling, u: f64) -> Self {
        RowSampling {
            temperature: s.temperature,
            top_k: s.top_k.min(i32::MAX as usize) as i32,
            top_p: s.top_p,
            min_p: s.min_p,
            u: (u as f32).clamp(0.0, 1.0 - f32::EPSILON / 2.0),
            skip: 0,
        }
    }

    /// The knobs of `d` (greedy where it has none), skipped where it is.
    pub fn of(d: &RowDraw) -> Self {
        let r = d.sampling.map_or(RowSampling::greedy(), |s| RowSampling::new(&s, d.u));
        RowSampling { skip: d.skip as i32, ..r }
    }

    /// A greedy row: the argmax (ties: lowest id) and its softmax probability, as the fused
    /// pick after lm_head.
    pub fn greedy() -> Self {
        RowSampling { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, u: 0.0, skip: 0 }
    }
}

/// The logits rows a draw reads: f32, or bf16 bits.
#[derive(Clone, Copy)]
pub(super) enum LogitRows<'a> {
    F32(&'a CudaSlice<f32>),
    Bf16(&'a CudaSlice<u16>),
}

impl LogitRows<'_> {
    fn len(&self) -> usize {
        match self {
            LogitRows::F32(l) => l.len(),
            LogitRows::Bf16(l) => l.len(),
        }
    }
}

impl CudaBackend {
    /// One draw per row of `logits` (`[rows, vocab]`, vocab = its length / rows) under each
    /// row's knobs: one upload of `params`, one launch, a token and a probability back per row.
    pub fn sample_logits(&self, logits: &CudaSlice<f32>, rows: usize, params: &[RowSampling]) -> Result<Vec<Pick>> {
        if rows == 0 && params.is_empty() {
            return Ok(vec![]);
        }
        self.draw_rows(LogitRows::F32(logits), rows, params)
    }

    /// [`CudaBackend::sample_logits`] over rows of bf16 bits (tests: `sample_rows_bf16`, the
    /// kernel of a sampled step whose lm_head writes bf16).
    pub fn sample_host_logits_bf16(&self, logits: &[u16], rows: usize, params: &[RowSampling]) -> Result<Vec<Pick>> {
        if logits.is_empty() {
            bail!("sample_host_logits_bf16: no logits for {rows} rows");
        }
        self.draw_rows(LogitRows::Bf16(&self.upload(logits, "logits")?), rows, params)
    }

    /// One draw per row of `logits` under each row's knobs, the shapes checked first.
    fn draw_rows(&self, logits: LogitRows, rows: usize, params: &[RowSampling]) -> Result<Vec<Pick>> {
        if rows == 0 || !logits.len().is_multiple_of(rows) || params.len() != rows {
            bail!("sampling: {} logits, {rows} rows and {} rows of sampling knobs do not fit", logits.len(), params.len());
        }
        let vocab = logits.len() / rows;
        let sampling = self.upload(params, "sampling knobs")?;
        let token = self.k.alloc::<u32>(rows, "sampled tokens")?;
        let prob = self.alloc_f32(rows, "sampled probabilities")?;
        self.launch_sample(logits, rows, vocab, &sampling, &token, &prob)?;
        let mut picks = self.download_picks(&token, &prob)?;
        picks.truncate(rows);
        Ok(picks)
    }

    /// [`CudaBackend::sample_logits`] over host rows (tests, benchmarks): one more upload.
    pub fn sample_host_logits(&self, logits: &[f32], rows: usize, params: &[RowSampling]) -> Result<Vec<Pick>> {
        if logits.is_empty() {
            if rows == 0 && params.is_empty() {
                return Ok(vec![]);
            }
            bail!("sample_host_logits: no logits for {rows} rows");
        }
        self.sample_logits(&self.upload(logits, "logits")?, rows, params)
    }

    /// Only the launch, into the caller's device buffers (a CUDA graph can hold it): the first
    /// `rows * vocab` of `logits`, `rows` of `sampling`; `rows` tokens and probabilities out.
    pub(super) fn launch_sample(
        &self,
        logits: LogitRows,
        rows: usize,
        vocab: usize,
        sampling: &CudaSlice<RowSampling>,
        token: &CudaSlice<u32>,
        prob: &CudaSlice<f32>,
    ) -> Result<()> {
        // A cluster of SAMPLE_CLUSTER CTAs a row: the grid's CTAs must count in an i32 too.
        if vocab == 0 || vocab > i32::MAX as usize || rows > i32::MAX as usize / SAMPLE_CLUSTER {
            bail!("sample_rows: vocab {vocab} must be in 1..2^31 and rows {rows} below 2^31 / {SAMPLE_CLUSTER}");
        }
        if logits.len() < rows * vocab || sampling.len() < rows || token.len() < rows || prob.len() < rows {
            bail!(
                "sample_rows: buffers too small for {rows} rows of {vocab} (logits {}, knobs {}, tokens {}, probabilities {})",
                logits.len(),
                sampling.len(),
                token.len(),
                prob.len()
            );
        }
        let (kernel, ptr) = match logits {
            LogitRows::F32(l) => (Kernel::SampleRows, self.p(l)),
            LogitRows::Bf16(l) => (Kernel::SampleRowsBf16, self.p(l)),
        };
        let p = SampleParams {
            logits: ptr,
            sampling: self.p(sampling),
            token: self.p(token),
            prob: self.p(prob),
            rows: rows as i32,
            vocab: vocab as i32,
        };
        // The cluster shape is the kernel's own (__cluster_dims__), so a plain launch (and a CUDA
        // graph's) takes it: row r is CTAs r * SAMPLE_CLUSTER .. (r + 1) * SAMPLE_CLUSTER.
        self.k.launch(kernel, ((rows * SAMPLE_CLUSTER) as u32, 1, 1), SAMPLE_THREADS as u32, &p)?;
        Ok(())
    }
}
