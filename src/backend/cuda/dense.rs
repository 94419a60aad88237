//! The dense projections of a forward: QKV, attention out, the dense MLP and shared expert, and
//! the router's logits. cuBLAS; or, with `CudaOptions::dense_stream`, at few rows (a batch-1
//! step's block) csrc/dense_stream.cu, which asks for its weights before the kernel before it
//! ends. cuBLAS reads them at 23-32% of the copy bandwidth there, but the stream still measured
//! slower (its cluster's reduction after the wait: docs/PERF.md, session 29), so it is off by
//! default: kept, tested, for the next attempt.

use super::kernels::{params::*, Kernel, Kernels};
use super::weights::DenseMlp;
use super::CudaBackend;
use anyhow::Result;
use cudarc::driver::CudaSlice;

/// The weight stream's output: f32 projections, or the gated MLP's bf16 activation.
enum StreamOut<'a> {
    F32(&'a CudaSlice<f32>),
    Gated(&'a CudaSlice<u16>),
}

/// The dense MLP's scratch: gate and up in f32 (cuBLAS; none for the weight stream, which
/// fuses the SiLU), and the bf16 activation.
pub(super) struct MlpBuffers {
    gate_up: Option<CudaSlice<f32>>,
    act: CudaSlice<u16>,
}

/// Where the dense MLP's down projection goes.
#[derive(Clone, Copy)]
pub(super) enum MlpOut<'a> {
    /// f32 rows of its own.
    Own(&'a CudaSlice<f32>),
    /// Added into the residual stream's f32 rows at this device address by cuBLAS (beta = 1).
    Residual(u64),
}

impl CudaBackend {
    /// A projection's weights (`w`, `[n][k]` bf16) as the TMA map of the dense tiles
    /// (csrc/gemm_tiles.cuh: lm_head_pick, qkv_rope_store), where they can run: on Hopper
    /// (wgmma), with rows TMA can step (k a multiple of 8 bf16) from a 16-byte aligned start.
    pub(super) fn dense_tiles_map(&self, w: u64, n: usize, k: usize, what: &str) -> Result<Option<CudaSlice<u8>>> {
        if !self.wgmma || !k.is_multiple_of(8) || !w.is_multiple_of(16) || n == 0 {
            return Ok(None);
        }
        let map = Kernels::tensor_map_bf16_3d(w, [k as u64, n as u64, 1], [GEMM_BK as u32, MOE_WS_BOX_ROWS as u32, 1])?;
        Ok(Some(self.k.upload(&map, what)?))
    }

    /// The persistent CTAs a dense-tiles kernel runs at most: those the GPU keeps resident (one an
    /// SM, by their shared memory), never more than the SMs.
    pub(super) fn dense_tiles_resident(&self, kernel: Kernel) -> Result<usize> {
        Ok((self.k.resident_ctas(kernel, DENSE_WS_THREADS, DENSE_WS_SMEM)? as usize).min(self.sm_count))
    }

    /// A dense-tiles kernel over `works` pieces of work: a persistent CTA for each resident one,
    /// none idle from the start. `dependent`: as a programmatic dependent of the kernel before (a
    /// kernel built with gemm_tiles.cuh's DEPENDENT, which waits for it before reading x). Only
    /// the launch: a CUDA graph can hold it.
    pub(super) fn launch_dense_tiles<P: cudarc::driver::DeviceRepr>(
        &self,
        kernel: Kernel,
        works: usize,
        dependent: bool,
        p: &P,
    ) -> Result<()> {
        let ctas = works.min(self.dense_tiles_resident(kernel)?) as u32;
        if dependent {
            return Ok(self.k.launch_dependent(kernel, (ctas, 1, 1), DENSE_WS_THREADS, DENSE_WS_SMEM, p)?);
        }
        Ok(self.k.launch_smem(kernel, (ctas, 1, 1), DENSE_WS_THREADS, DENSE_WS_SMEM, p)?)
    }

    /// Whether a projection of `rows` rows over `k` inputs (`gated`: two matrices) takes the weight
    /// stream: 16-byte rows of x, a cluster's k ranges covering k, and DENSE_STREAM_CTAS CTAs an SM
    /// (mini's QKV and attention out do; its dense MLP's gated tiles, twice the weights, do not).
    pub(super) fn streams(&self, rows: usize, k: usize, gated: bool) -> bool {
        self.opts.dense_stream
            && rows > 0
            && rows <= DENSE_STREAM_ROWS
            && k.is_multiple_of(8)
            && k <= DENSE_STREAM_CLUSTER * DENSE_STREAM_MAX_KR
            && stream_smem(stream_k_split(k), gated) <= DENSE_STREAM_MAX_SMEM
    }

    /// `y[rows, n] = x w^T`, f32 out; `w` is `[n][k]`.
    pub(super) fn gemm(
        &self,
        what: &str,
        x: &CudaSlice<u16>,
        w: &CudaSlice<u16>,
        rows: usize,
        n: usize,
        k: usize,
    ) -> Result<CudaSlice<f32>> {
        let y = self.alloc_f32(rows * n, what)?;
        self.gemm_into(what, x, w, &y, rows, n, k)?;
        Ok(y)
    }

    /// [`CudaBackend::gemm`] into `y` (launches only): the weight stream or cuBLAS.
    #[allow(clippy::too_many_arguments)]
    fn gemm_into(
        &self,
        what: &str,
        x: &CudaSlice<u16>,
        w: &CudaSlice<u16>,
        y: &CudaSlice<f32>,
        rows: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        if self.streams(rows, k, false) {
            self.stream_projection(what, x, self.p(w), None, StreamOut::F32(y), rows, n, k)
        } else {
            Ok(self.k.gemm_bf16_f32(what, self.p(x), self.p(w), self.p(y), rows, n, k, 0.0)?)
        }
    }

    /// [`CudaBackend::gemm`] by cuBLAS at every row count.
    pub(super) fn cublas_gemm(
        &self,
        what: &str,
        x: &CudaSlice<u16>,
        w: &CudaSlice<u16>,
        rows: usize,
        n: usize,
        k: usize,
    ) -> Result<CudaSlice<f32>> {
        let y = self.alloc_f32(rows * n, what)?;
        self.k.gemm_bf16_f32(what, self.p(x), self.p(w), self.p(&y), rows, n, k, 0.0)?;
        Ok(y)
    }

    /// The dense MLP (and the shared expert): `bf16(silu(x gate^T) * (x up^T)) down^T`, f32 out.
    pub(super) fn dense_mlp(&self, m: &DenseMlp, x: &CudaSlice<u16>, rows: usize) -> Result<CudaSlice<f32>> {
        let b = self.mlp_buffers(m, rows)?;
        let y = self.alloc_f32(rows * self.cfg.hidden_size, "mlp down")?;
        self.dense_mlp_into(m, x, rows, &b, MlpOut::Own(&y))?;
        Ok(y)
    }

    /// The scratch [`CudaBackend::dense_mlp_into`] writes, allocated apart from it so that it can
    /// run on the side stream (which must not allocate: see `Kernels::beside`).
    pub(super) fn mlp_buffers(&self, m: &DenseMlp, rows: usize) -> Result<MlpBuffers> {
        let h = self.cfg.hidden_size;
        let gate_up = if self.streams(rows, h, true) { None } else { Some(self.alloc_f32(rows * 2 * m.inter, "mlp gate_up")?) };
        Ok(MlpBuffers { gate_up, act: self.alloc_bf16(rows * m.inter, "mlp activation")? })
    }

    /// The device addresses of a dense MLP's gate and up matrices: `gate_up` holds the gate's
    /// rows, then the up's (two [inter][H] matrices).
    pub(super) fn gate_and_up(&self, m: &DenseMlp) -> (u64, u64) {
        let gate = self.p(&m.gate_up);
        (gate, gate + (m.gate_up.len() / 2 * std::mem::size_of::<u16>()) as u64)
    }

    /// Whether the weight stream takes the dense MLP's down projection into rows of its own at
    /// `rows` rows ([`MlpOut::Own`]; it cannot add, and [`MlpOut::Residual`] is cuBLAS's).
    pub(super) fn mlp_down_streams(&self, m: &DenseMlp, rows: usize) -> bool {
        self.streams(rows, m.inter, false)
    }

    /// The dense MLP (and the shared expert), `bf16(silu(x gate^T) * (x up^T)) down^T` in f32,
    /// into `y` with the scratch from [`CudaBackend::mlp_buffers`] (launches only).
    pub(super) fn dense_mlp_into(&self, m: &DenseMlp, x: &CudaSlice<u16>, rows: usize, b: &MlpBuffers, y: MlpOut) -> Result<()> {
        let h = self.cfg.hidden_size;
        if let Some(gu) = &b.gate_up {
            self.k.gemm_bf16_f32("mlp gate_up", self.p(x), self.p(&m.gate_up), self.p(gu), rows, 2 * m.inter, h, 0.0)?;
            let p = SiluMulParams { gu: self.p(gu), out: self.p(&b.act), rows: rows as i32, inter: m.inter as i32 };
            // Four columns a thread (csrc/mlp.cu).
            self.k.launch_grid_stride(Kernel::SiluMul, (rows * m.inter).div_ceil(4), &p)?;
        } else {
            let (gate, up) = self.gate_and_up(m);
            self.stream_projection("mlp gate_up", x, gate, Some(up), StreamOut::Gated(&b.act), rows, m.inter, h)?;
        }
        match y {
            MlpOut::Own(y) => self.gemm_into("mlp down", &b.act, &m.down, y, rows, h, m.inter),
            MlpOut::Residual(x) => Ok(self.k.gemm_bf16_f32("mlp down", self.p(&b.act), self.p(&m.down), x, rows, h, m.inter, 1.0)?),
        }
    }

    /// One weight-stream launch: `w1` (and `w2`, gated) `[n][k]` at these addresses; profiled as
    /// "stream {what}".
    #[allow(clippy::too_many_arguments)]
    fn stream_projection(
        &self,
        what: &str,
        x: &CudaSlice<u16>,
        w1: u64,
        w2: Option<u64>,
        out: StreamOut,
        rows: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        let kernel = if w2.is_some() { Kernel::DenseGateUpStream } else { Kernel::DenseStream };
        let tiles = n.div_ceil(DENSE_STREAM_COLS);
        let k_split = stream_k_split(k);
        let smem = stream_smem(k_split, w2.is_some()) as u32;
        let (f32_out, act_out) = match out {
            StreamOut::F32(y) => (self.p(y), 0),
            StreamOut::Gated(a) => (0, self.p(a)),
        };
        let p = DenseStreamParams {
            x: self.p(x),
            w1,
            w2: w2.unwrap_or(0),
            f32_out,
            act_out,
            rows: rows as i32,
            n: n as i32,
            k: k as i32,
            k_split: k_split as i32,
        };
        // A programmatic dependent: its CTAs ask for their weights while the kernel before runs.
        self.k.launch_dependent_as(
            kernel,
            &format!("stream {what}"),
            (tiles as u32, DENSE_STREAM_CLUSTER as u32, 1),
            DENSE_STREAM_THREADS as u32,
            smem,
            &p,
        )?;
        Ok(())
    }
}

/// The weight stream's k range a CTA: the cluster's CTAs split k evenly, in whole chunks.
fn stream_k_split(k: usize) -> usize {
    k.div_ceil(DENSE_STREAM_KC).div_ceil(DENSE_STREAM_CLUSTER) * DENSE_STREAM_KC
}

/// The weight stream's dynamic shared memory, as csrc/dense_stream.cu lays it out: the weight
/// tile (gated: two) and x, DENSE_STREAM_COLS and DENSE_STREAM_ROWS rows of k_split +
/// DENSE_STREAM_PAD bf16 (the partial sums go over the weight tile afterwards: params.h).
fn stream_smem(k_split: usize, gated: bool) -> usize {
    let mats = if gated { 2 } else { 1 };
    (mats * DENSE_STREAM_COLS + DENSE_STREAM_ROWS) * (k_split + DENSE_STREAM_PAD) * std::mem::size_of::<u16>()
}
