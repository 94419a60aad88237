//! Block FP8 (float8 e4m3, one f32 scale per 128x128 weight block): the DeepSeek-V3 / SGLang
//! layout of the routed experts under `--quantization fp8`. Device-free: the host encoder and
//! decoder here are the CPU twins of csrc/quantize_fp8.cu and of the fp8 GEMM's staging, and the
//! CPU backend and `make-model --quantization fp8` quantize with them.
//!
//! A matrix `[out, in]` is stored as `weight` (e4m3 bytes, row-major) and `weight_scale_inv`
//! (f32 `[ceil(out/128), ceil(in/128)]`); the weight it stands for is `e4m3 * scale_inv`.
//! The quantizer's rules (the GPU kernel follows them bit for bit): per block, `amax` = the
//! largest |x|; `scale_inv = amax / 448` (1 where amax is 0, so an all-zero block stays zero);
//! each element is `e4m3(x / scale_inv)`, rounded to nearest (ties to even), saturated to ±448.

use anyhow::{bail, Result};

/// Rows and columns of one scale block (config.json `weight_block_size`).
pub const BLOCK: usize = 128;
/// The largest finite e4m3 value (`S.1111.110`).
pub const E4M3_MAX: f32 = 448.0;
/// The code a NaN encodes to (what `__nv_cvt_float_to_fp8` returns for one).
pub const E4M3_NAN: u8 = 0x7F;

/// How expert weights are stored on the device (`--quantization`, SGLang's flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// Routed experts as block FP8 (e4m3 + one f32 scale per 128x128 block): W8A16 GEMMs, or on
    /// Hopper from 8 rows an expert (4 at 4096 wide) W8A8, the activations quantized per row and
    /// 128 columns (see `--fp8-activations`).
    Fp8,
}

/// config.json's `quantization_config` for block FP8, as DeepSeek-V3 / SGLang checkpoints spell it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct QuantizationConfig {
    pub quant_method: String,
    #[serde(default)]
    pub weight_block_size: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_scheme: Option<String>,
}

impl QuantizationConfig {
    /// What `make-model --quantization fp8` writes and `--quantization fp8` serves.
    pub fn fp8_blocks() -> Self {
        QuantizationConfig {
            quant_method: "fp8".into(),
            weight_block_size: Some(vec![BLOCK, BLOCK]),
            activation_scheme: Some("dynamic".into()),
        }
    }

    /// Only block FP8 with 128x128 blocks is implemented; anything else is refused by name.
    pub fn check(&self) -> Result<(), String> {
        if self.quant_method != "fp8" {
            return Err(format!("quantization_config.quant_method {:?} is not supported (only \"fp8\")", self.quant_method));
        }
        if self.weight_block_size.as_deref() != Some(&[BLOCK, BLOCK]) {
            return Err(format!(
                "quantization_config.weight_block_size {:?} is not supported (only [{BLOCK}, {BLOCK}] blocks)",
                self.weight_block_size
            ));
        }
        if let Some(a) = &self.activation_scheme {
            if a != "dynamic" {
                return Err(format!("quantization_config.activation_scheme {a:?} is not supported (only \"dynamic\": bf16 activations)"));
            }
        }
        Ok(())
    }
}

/// The scale tensor's name for a weight `<stem>.weight`: `<stem>.weight_scale_inv`.
pub fn scale_name(weight: &str) -> String {
    format!("{weight}_scale_inv")
}

/// `[ceil(out/128), ceil(in/128)]`: the scale grid of an `[out, in]` matrix.
pub fn scale_shape(out: usize, inp: usize) -> [usize; 2] {
    [out.div_ceil(BLOCK), inp.div_ceil(BLOCK)]
}

/// Bytes an `[out, in]` expert matrix takes on the device: bf16, or fp8 codes plus f32 scales.
pub fn matrix_bytes(out: usize, inp: usize, fp8: bool) -> f64 {
    let [sr, sc] = scale_shape(out, inp);
    if fp8 {
        (out * inp + sr * sc * 4) as f64
    } else {
        (out * inp * 2) as f64
    }
}

/// The f32 value of an e4m3 code (exact).
pub fn e4m3_to_f32(code: u8) -> f32 {
    let neg = code & 0x80 != 0;
    let (e, m) = ((code >> 3) & 0xF, code & 0x7);
    let v = if e == 0xF && m == 0x7 {
        f32::NAN
    } else if e == 0 {
        m as f32 * (1.0 / 512.0) // subnormal: m * 2^-9
    } else {
        (1.0 + m as f32 / 8.0) * 2f32.powi(e as i32 - 7)
    };
    if neg {
        -v
    } else {
        v
    }
}

/// `x` as e4m3: round to nearest, ties to even; |x| above 448 (infinities too) saturates to ±448;
/// NaN is 0x7F. `__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3)` bit for bit.
pub fn f32_to_e4m3(x: f32) -> u8 {
    if x.is_nan() {
        return E4M3_NAN;
    }
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    // f64 holds every step below exactly (an f32 times a power of two, minus an integer).
    let a = x.abs() as f64;
    let mag = if a < 1.0 / 64.0 {
        // Below the smallest normal (2^-6): multiples of 2^-9; 8 * 2^-9 rounds up into code 0x08.
        (a * 512.0).round_ties_even() as u32
    } else {
        let e = a.log2().floor() as i32;
        // log2 of a value just below a power of two can round up: keep the mantissa in [1, 2).
        let e = if a < 2f64.powi(e) { e - 1 } else { e };
        let mut m = ((a / 2f64.powi(e) - 1.0) * 8.0).round_ties_even() as i32;
        let mut e = e;
        if m == 8 {
            m = 0;
            e += 1;
        }
        if e > 8 || (e == 8 && m > 6) {
            0x7E // saturate to 448
        } else {
            (((e + 7) as u32) << 3) | m as u32
        }
    };
    sign | mag as u8
}

/// A matrix quantized to block FP8.
#[derive(Debug, Clone, PartialEq)]
pub struct Fp8Matrix {
    pub out: usize,
    pub inp: usize,
    /// `[out, in]` e4m3 codes.
    pub codes: Vec<u8>,
    /// `[ceil(out/128), ceil(in/128)]`.
    pub scale_inv: Vec<f32>,
}

/// The scale of one block whose largest magnitude is `amax`.
pub fn block_scale(amax: f32) -> f32 {
    if amax > 0.0 {
        amax / E4M3_MAX
    } else {
        1.0
    }
}

/// Quantize a row-major `[out, in]` matrix (the rules in the module comment).
pub fn quantize(w: &[f32], out: usize, inp: usize) -> Result<Fp8Matrix> {
    if w.len() != out * inp {
        bail!("quantize: {} values for a {out}x{inp} matrix", w.len());
    }
    let [sr, sc] = scale_shape(out, inp);
    let mut scale_inv = vec![1.0f32; sr * sc];
    let mut codes = vec![0u8; out * inp];
    for br in 0..sr {
        for bc in 0..sc {
            let (r0, r1, c0, c1) = (br * BLOCK, ((br + 1) * BLOCK).min(out), bc * BLOCK, ((bc + 1) * BLOCK).min(inp));
            // NaN is skipped by max (as fmaxf does on the GPU) and then encodes to NaN itself.
            let amax = (r0..r1).flat_map(|r| w[r * inp + c0..r * inp + c1].iter()).fold(0f32, |m, x| m.max(x.abs()));
            let s = block_scale(amax);
            scale_inv[br * sc + bc] = s;
            for r in r0..r1 {
                for c in c0..c1 {
                    codes[r * inp + c] = f32_to_e4m3(w[r * inp + c] / s);
                }
            }
        }
    }
    Ok(Fp8Matrix { out, inp, codes, scale_inv })
}

impl Fp8Matrix {
    /// From stored codes and scales, checking their lengths.
    pub fn new(out: usize, inp: usize, codes: Vec<u8>, scale_inv: Vec<f32>) -> Result<Self> {
        let [sr, sc] = scale_shape(out, inp);
        if codes.len() != out * inp || scale_inv.len() != sr * sc {
            bail!(
                "an fp8 {out}x{inp} matrix needs {} codes and {} scales, got {} and {}",
                out * inp,
                sr * sc,
                codes.len(),
                scale_inv.len()
            );
        }
        Ok(Fp8Matrix { out, inp, codes, scale_inv })
    }

    /// The f32 weights it stands for: code * scale_inv of its block.
    pub fn dequantize(&self) -> Vec<f32> {
        let sc = self.inp.div_ceil(BLOCK);
        let mut w = Vec::with_capacity(self.codes.len());
        for r in 0..self.out {
            for c in 0..self.inp {
                w.push(e4m3_to_f32(self.codes[r * self.inp + c]) * self.scale_inv[(r / BLOCK) * sc + c / BLOCK]);
            }
        }
        w
    }
}

/// Activations `[rows, cols]` quantized as the W8A8 expert tiles take them (CUDA
/// `fp8_activations`; csrc/quantize_fp8.cu's quantize_rows_fp8 bit for bit): the weights' rules
/// over groups of 1 x 128 (a row's columns 0..128, 128..256, ...): codes `[rows, cols]` and scales
/// `[rows, ceil(cols/128)]`.
pub fn quantize_rows(x: &[f32], rows: usize, cols: usize) -> Result<(Vec<u8>, Vec<f32>)> {
    if x.len() != rows * cols {
        bail!("quantize_rows: {} values for {rows}x{cols}", x.len());
    }
    let groups = cols.div_ceil(BLOCK);
    let (mut codes, mut scales) = (vec![0u8; rows * cols], vec![1.0f32; rows * groups]);
    for r in 0..rows {
        for g in 0..groups {
            let (c0, c1) = (r * cols + g * BLOCK, r * cols + ((g + 1) * BLOCK).min(cols));
            let s = block_scale(x[c0..c1].iter().fold(0f32, |m, v| m.max(v.abs())));
            scales[r * groups + g] = s;
            for c in c0..c1 {
                codes[c] = f32_to_e4m3(x[c] / s);
            }
        }
    }
    Ok((codes, scales))
}

/// One activation row as the W8A8 tiles multiply it: quantized by [`quantize_rows`] and
/// dequantized (code * its group's scale).
pub fn round_trip_row(x: &[f32]) -> Vec<f32> {
    let (codes, scales) = quantize_rows(x, 1, x.len()).expect("one row of its own length");
    codes.iter().enumerate().map(|(c, &q)| e4m3_to_f32(q) * scales[c / BLOCK]).collect()
}

/// The f32 weights a bf16 matrix becomes once quantized and dequantized (what the fp8 GEMMs
/// multiply by): the CPU backend's `--quantization fp8`.
pub fn round_trip(w: &[f32], out: usize, inp: usize) -> Result<Vec<f32>> {
    Ok(quantize(w, out, inp)?.dequantize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_decodes_and_encodes_back() {
        let mut finite = 0;
        for c in 0..=255u8 {
            let v = e4m3_to_f32(c);
            if c & 0x7F == 0x7F {
                assert!(v.is_nan(), "code {c:#x} is NaN");
                continue;
            }
            finite += 1;
            assert_eq!(f32_to_e4m3(v), c, "code {c:#x} = {v}");
            assert!(v.abs() <= E4M3_MAX);
        }
        assert_eq!(finite, 254);
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(e4m3_to_f32(0x01), 1.0 / 512.0);
        assert_eq!(e4m3_to_f32(0x08), 1.0 / 64.0);
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0xB8), -1.0);
    }

    #[test]
    fn ties_round_to_even() {
        // Between 1.0 (m 0) and 1.125 (m 1): the midpoint goes to the even mantissa 0.
        assert_eq!(f32_to_e4m3(1.0625), 0x38);
        // Between 1.125 (m 1) and 1.25 (m 2): to 2.
        assert_eq!(f32_to_e4m3(1.1875), 0x3A);
        // Just off the midpoint rounds to the nearer one.
        assert_eq!(f32_to_e4m3(1.0625 + 1e-6), 0x39);
        // Subnormals: 0.5 * 2^-9 rounds to 0, 1.5 * 2^-9 to 2 * 2^-9.
        assert_eq!(f32_to_e4m3(0.5 / 512.0), 0x00);
        assert_eq!(f32_to_e4m3(1.5 / 512.0), 0x02);
        // Halfway between the largest subnormal (7 * 2^-9) and the smallest normal: to the normal.
        assert_eq!(f32_to_e4m3(7.5 / 512.0), 0x08);
        // A mantissa that rounds up into the next binade: 1.9375 -> 2.0.
        assert_eq!(f32_to_e4m3(1.9375), 0x40);
        assert_eq!(f32_to_e4m3(-1.0625), 0xB8);
    }

    #[test]
    fn saturation_nan_and_signed_zero() {
        assert_eq!(f32_to_e4m3(448.0), 0x7E);
        assert_eq!(f32_to_e4m3(460.0), 0x7E);
        assert_eq!(f32_to_e4m3(1e9), 0x7E);
        assert_eq!(f32_to_e4m3(f32::INFINITY), 0x7E);
        assert_eq!(f32_to_e4m3(f32::NEG_INFINITY), 0xFE);
        assert_eq!(f32_to_e4m3(-500.0), 0xFE);
        assert_eq!(f32_to_e4m3(f32::NAN), E4M3_NAN);
        assert_eq!(f32_to_e4m3(0.0), 0x00);
        assert_eq!(f32_to_e4m3(-0.0), 0x80);
        assert_eq!(f32_to_e4m3(1e-30), 0x00);
        // Just below 2^k: log2 rounds up in f64; the mantissa must still land right.
        assert_eq!(f32_to_e4m3(f32::from_bits(2.0f32.to_bits() - 1)), 0x40);
    }

    #[test]
    fn encoding_is_the_nearest_code() {
        // Every f32 on a fine grid: the code's value is no farther than any other code's.
        let codes: Vec<f32> = (0..=255u8).map(e4m3_to_f32).filter(|v| v.is_finite()).collect();
        let mut x = -470.0f32;
        while x < 470.0 {
            let got = e4m3_to_f32(f32_to_e4m3(x));
            let clamped = x.clamp(-E4M3_MAX, E4M3_MAX);
            let best = codes.iter().map(|c| (c - clamped).abs()).fold(f32::INFINITY, f32::min);
            assert!((got - clamped).abs() <= best, "{x}: got {got}, a code is {best} away");
            x += 0.0137;
        }
    }

    fn lcg_matrix(out: usize, inp: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..out * inp)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect()
    }

    #[test]
    fn block_round_trip_error_is_bounded_with_ragged_edges() {
        // tiny's widths (32, 64, 128) and shapes that leave partial blocks on both edges.
        for (out, inp) in [(32, 64), (64, 32), (128, 64), (200, 136), (129, 257)] {
            let w = lcg_matrix(out, inp, (out * 1000 + inp) as u64);
            let q = quantize(&w, out, inp).unwrap();
            assert_eq!(q.scale_inv.len(), out.div_ceil(BLOCK) * inp.div_ceil(BLOCK));
            let d = q.dequantize();
            for (bi, s) in q.scale_inv.iter().enumerate() {
                assert!(*s > 0.0 && s.is_finite(), "block {bi} scale {s}");
            }
            let sc = inp.div_ceil(BLOCK);
            for r in 0..out {
                for c in 0..inp {
                    let (x, y) = (w[r * inp + c], d[r * inp + c]);
                    let s = q.scale_inv[(r / BLOCK) * sc + c / BLOCK];
                    // Half a step of e4m3 (3 mantissa bits: 2^-4 relative) or half a subnormal.
                    let bound = (x.abs() / 16.0).max(s / 1024.0) * 1.0001;
                    assert!((x - y).abs() <= bound, "{out}x{inp} [{r},{c}]: {x} -> {y} (bound {bound})");
                }
            }
            let rel = (d.iter().zip(&w).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>()
                / w.iter().map(|b| (*b as f64).powi(2)).sum::<f64>())
            .sqrt();
            assert!(rel < 0.04, "{out}x{inp}: relative error {rel}");
        }
    }

    #[test]
    fn block_amax_maps_to_448_and_zero_blocks_keep_scale_one() {
        let (out, inp) = (130, 140);
        let mut w = vec![0f32; out * inp];
        w[3 * inp + 5] = -3.5; // block (0, 0)
        w[129 * inp + 139] = 0.25; // block (1, 1), a ragged corner
        let q = quantize(&w, out, inp).unwrap();
        assert_eq!(q.scale_inv, vec![3.5 / 448.0, 1.0, 1.0, 0.25 / 448.0]);
        assert_eq!(q.codes[3 * inp + 5], 0xFE);
        assert_eq!(q.codes[129 * inp + 139], 0x7E);
        assert_eq!(q.dequantize()[3 * inp + 5], -3.5);
        assert!(q.codes.iter().enumerate().all(|(i, &c)| c == 0 || i == 3 * inp + 5 || i == 129 * inp + 139));
    }

    #[test]
    fn nan_in_a_block_stays_nan_and_does_not_poison_its_scale() {
        let mut w = vec![1.0f32; 4];
        w[1] = f32::NAN;
        let q = quantize(&w, 2, 2).unwrap();
        assert_eq!(q.scale_inv, vec![1.0 / 448.0]);
        assert_eq!(q.codes, vec![0x7E, E4M3_NAN, 0x7E, 0x7E]);
        assert!(q.dequantize()[1].is_nan());
    }

    #[test]
    fn rows_quantize_in_groups_of_128_columns() {
        // 2 rows of 300 columns: groups of 128, 128 and 44; one group all zero (scale 1).
        let mut x = lcg_matrix(2, 300, 7);
        for v in &mut x[300 + 128..300 + 256] {
            *v = 0.0;
        }
        let (codes, scales) = quantize_rows(&x, 2, 300).unwrap();
        assert_eq!((codes.len(), scales.len()), (600, 6));
        for r in 0..2 {
            for g in 0..3 {
                let span = &x[r * 300 + g * 128..r * 300 + ((g + 1) * 128).min(300)];
                let amax = span.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert_eq!(scales[r * 3 + g], block_scale(amax), "row {r} group {g}");
            }
        }
        assert_eq!(scales[4], 1.0);
        // Each value within half an e4m3 step (2^-4 relative) of its round trip, or of 0 below
        // the subnormals' reach.
        let rt: Vec<f32> = x.chunks(300).flat_map(round_trip_row).collect();
        for (i, (a, b)) in x.iter().zip(&rt).enumerate() {
            let s = scales[(i / 300) * 3 + (i % 300) / 128];
            assert!((a - b).abs() <= a.abs() / 16.0 + s / 1024.0, "{i}: {a} -> {b}");
        }
    }

    #[test]
    fn quantization_config_is_checked() {
        assert!(QuantizationConfig::fp8_blocks().check().is_ok());
        let mut c = QuantizationConfig::fp8_blocks();
        c.weight_block_size = Some(vec![64, 64]);
        assert!(c.check().unwrap_err().contains("[128, 128]"));
        let mut c = QuantizationConfig::fp8_blocks();
        c.quant_method = "awq".into();
        assert!(c.check().unwrap_err().contains("awq"));
        assert!(Fp8Matrix::new(3, 3, vec![0; 9], vec![]).is_err());
        assert!(quantize(&[0.0; 5], 2, 2).is_err());
    }
}
