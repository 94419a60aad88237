//! Block-FP8 routed experts on the device: the `quantize_fp8` launcher (csrc/quantize_fp8.cu,
//! CPU twin `crate::fp8::quantize`) and the two ways FP8 experts are made: uploaded as stored
//! (an fp8 checkpoint), or uploaded as bf16 one matrix at a time into a reusable staging buffer
//! and quantized there (`--quantization fp8` over a bf16 checkpoint, and random weights), so no
//! second copy of the experts is ever held in host memory.

use super::error::CudaError;
use super::kernels::{params::*, ptr, Kernel, Kernels};
use super::CudaBackend;
use crate::checkpoint::{Checkpoint, DType, Slice};
use crate::fp8::scale_shape;
use anyhow::{anyhow, Result};
use cudarc::driver::CudaSlice;

/// One stacked expert matrix `[E][n][k]` (gate, up or down of every routed expert of a layer).
pub enum ExpertMatrix {
    Bf16(CudaSlice<u16>),
    /// e4m3 codes `[E][n][k]` and their scales `[E][ceil(n/128)][ceil(k/128)]`.
    Fp8 {
        codes: CudaSlice<u8>,
        scale_inv: CudaSlice<f32>,
    },
}

/// Quantize `mats` stacked bf16 `[rows, cols]` matrices at device address `src` into the codes
/// and scales at `codes` / `scale_inv` (device addresses of the same layout as [`ExpertMatrix::Fp8`]).
pub fn launch_quantize(k: &Kernels, src: u64, codes: u64, scale_inv: u64, mats: usize, rows: usize, cols: usize) -> Result<()> {
    let [sr, sc] = scale_shape(rows, cols);
    let p = QuantizeFp8Params { src, codes, scale_inv, rows: rows as i32, cols: cols as i32 };
    Ok(k.launch(Kernel::QuantizeFp8, (sc as u32, sr as u32, mats as u32), QUANT_THREADS as u32, &p)?)
}

/// Quantize activations `[rows, cols]` bf16 at device address `src` into e4m3 codes `[rows, cols]`
/// at `codes` and scales `[rows, ceil(cols/128)]` at `scale` (csrc/quantize_fp8.cu,
/// quantize_rows_fp8; CPU twin `crate::fp8::quantize_rows`).
pub fn launch_quantize_rows(k: &Kernels, src: u64, codes: u64, scale: u64, rows: usize, cols: usize) -> Result<()> {
    let groups = rows * cols.div_ceil(crate::fp8::BLOCK);
    let p = QuantizeRowsParams { src, codes, scale, rows: rows as i32, cols: cols as i32 };
    let ctas = groups.div_ceil(QUANT_ROWS_WARPS).max(1);
    Ok(k.launch(Kernel::QuantizeRowsFp8, (ctas as u32, 1, 1), (QUANT_ROWS_WARPS * WARP) as u32, &p)?)
}

/// Device buffers for `mats` fp8 matrices `[rows, cols]`.
fn alloc_fp8(k: &Kernels, mats: usize, rows: usize, cols: usize, what: &str) -> Result<(CudaSlice<u8>, CudaSlice<f32>)> {
    let [sr, sc] = scale_shape(rows, cols);
    Ok((k.alloc::<u8>(mats * rows * cols, what)?, k.alloc::<f32>(mats * sr * sc, what)?))
}

/// The experts `names` (each `[rows, cols]`) as fp8 on the device, from a checkpoint: stored
/// fp8 tensors are uploaded as they are; bf16 (or f16/f32) ones go through a one-matrix staging
/// buffer and the quantize kernel. `done(name)` is called after each (the progress bar).
pub fn from_checkpoint(
    k: &Kernels,
    ck: &Checkpoint,
    names: &[String],
    rows: usize,
    cols: usize,
    slice: &Slice,
    mut done: impl FnMut(&str),
) -> Result<ExpertMatrix> {
    let (mut codes, mut scale_inv) = alloc_fp8(k, names.len(), rows, cols, &names[0])?;
    let [sr, sc] = scale_shape(rows, cols);
    let (numel, nscale) = (rows * cols, sr * sc);
    let mut staging: Option<CudaSlice<u16>> = None;
    for (i, n) in names.iter().enumerate() {
        if ck.tensor(n)?.dtype == DType::F8E4M3 {
            let m = ck.fp8_slice(n, slice)?;
            if (m.out, m.inp) != (rows, cols) {
                return Err(anyhow!("tensor {n} is {}x{}, expected {rows}x{cols}", m.out, m.inp));
            }
            let mut dst = codes.slice_mut(i * numel..(i + 1) * numel);
            k.stream.memcpy_htod(&m.codes, &mut dst).map_err(CudaError::driver(|| format!("uploading {n}")))?;
            let mut dst = scale_inv.slice_mut(i * nscale..(i + 1) * nscale);
            k.stream.memcpy_htod(&m.scale_inv, &mut dst).map_err(CudaError::driver(|| format!("uploading {n}'s scales")))?;
        } else {
            let bits = ck.bf16_bits_slice(n, slice)?;
            if bits.len() != numel {
                return Err(anyhow!("tensor {n} has {} elements, expected {numel}", bits.len()));
            }
            let st = match &mut staging {
                Some(s) => s,
                None => staging.insert(k.alloc::<u16>(numel, "the fp8 staging buffer")?),
            };
            k.stream.memcpy_htod(&bits, st).map_err(CudaError::driver(|| format!("uploading {n}")))?;
            let (c, s) = (ptr(&codes, &k.stream) + (i * numel) as u64, ptr(&scale_inv, &k.stream) + (i * nscale * 4) as u64);
            launch_quantize(k, ptr(st, &k.stream), c, s, 1, rows, cols)?;
        }
        done(n);
    }
    Ok(ExpertMatrix::Fp8 { codes, scale_inv })
}

/// `mats` fp8 matrices `[rows, cols]` whose bf16 values `draw(i, staging address)` writes into a
/// one-matrix staging buffer (random device weights: the same draws as the bf16 ones).
pub fn from_draws(
    k: &Kernels,
    what: &str,
    mats: usize,
    rows: usize,
    cols: usize,
    mut draw: impl FnMut(usize, u64) -> Result<()>,
) -> Result<ExpertMatrix> {
    let (codes, scale_inv) = alloc_fp8(k, mats, rows, cols, what)?;
    let [sr, sc] = scale_shape(rows, cols);
    let staging = k.alloc::<u16>(rows * cols, "the fp8 staging buffer")?;
    let st = ptr(&staging, &k.stream);
    for i in 0..mats {
        draw(i, st)?;
        let (c, s) = (ptr(&codes, &k.stream) + (i * rows * cols) as u64, ptr(&scale_inv, &k.stream) + (i * sr * sc * 4) as u64);
        launch_quantize(k, st, c, s, 1, rows, cols)?;
    }
    Ok(ExpertMatrix::Fp8 { codes, scale_inv })
}

impl CudaBackend {
    /// The quantize kernel alone on `mats` bf16 `[rows, cols]` matrices (tests: against
    /// `crate::fp8::quantize`): (codes, scales).
    pub fn quantize_fp8(&self, bf16_bits: &[u16], mats: usize, rows: usize, cols: usize) -> Result<(Vec<u8>, Vec<f32>)> {
        if bf16_bits.len() != mats * rows * cols {
            return Err(anyhow!("quantize_fp8: {} values for {mats} {rows}x{cols} matrices", bf16_bits.len()));
        }
        let src = self.upload(bf16_bits, "quantize input")?;
        let (codes, scales) = alloc_fp8(&self.k, mats, rows, cols, "quantize output")?;
        launch_quantize(&self.k, self.p(&src), self.p(&codes), self.p(&scales), mats, rows, cols)?;
        Ok((self.download(&codes, "fp8 codes")?, self.download(&scales, "fp8 scales")?))
    }

    /// The activations' quantize kernel on `rows` bf16 rows of `cols` (bits), read back: (codes,
    /// scales), for testing it against `crate::fp8::quantize_rows`.
    pub fn quantize_rows_fp8(&self, bf16_bits: &[u16], rows: usize, cols: usize) -> Result<(Vec<u8>, Vec<f32>)> {
        if bf16_bits.len() != rows * cols {
            return Err(anyhow!("quantize_rows_fp8: {} values for {rows}x{cols}", bf16_bits.len()));
        }
        let src = self.upload(bf16_bits, "quantize_rows input")?;
        let codes = self.k.alloc::<u8>(rows * cols, "quantize_rows codes")?;
        let scales = self.k.alloc::<f32>(rows * cols.div_ceil(crate::fp8::BLOCK), "quantize_rows scales")?;
        launch_quantize_rows(&self.k, self.p(&src), self.p(&codes), self.p(&scales), rows, cols)?;
        Ok((self.download(&codes, "fp8 codes")?, self.download(&scales, "fp8 scales")?))
    }
}
