//! The step's dense GEMMs through cuBLASLt, each shape on the algorithm that measured fastest
//! (part of the launch layer with kernels.rs: the `unsafe` calls into cuBLASLt live here).
//!
//! Why: cuBLAS's own heuristic picks one kernel a shape by a model, and at the step's skinny
//! shapes (32 to 2,048 rows against 2,048-wide weights) its picks ran far below their ceilings
//! on the H200 (`dllm bench kernels`: at batch 1 the QKV projection at 31% of the bandwidth,
//! the router's logits at 3%; at batch 16 the dense GEMMs at 22-54% of the GEMM rate; docs/PERF.md).
//! cuBLASLt offers several algorithms a shape (tile shapes, split-K); the first GEMM of a shape
//! times up to [`CANDIDATES`] of them on its own inputs, into a scratch output, and the shape
//! keeps the fastest for the life of the backend. That first GEMM is eager (a step's shape runs
//! eagerly before it is recorded as a CUDA graph, graph.rs); inside a capture nothing can be
//! timed, so a shape first met there takes cuBLASLt's first pick, for good. One algorithm a shape keeps a
//! forward's results the same from call to call and between eager forwards and graph replays.

use super::error::{CudaError, Result};
use cudarc::cublaslt::{result::CublasError, sys as lt};
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DevicePtr};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

/// Algorithms asked of cuBLASLt's heuristic and timed, a shape.
const CANDIDATES: usize = 8;
/// Timed runs of each candidate (after one untimed), each after L2 is flushed.
const TIMED_RUNS: usize = 3;
/// Bytes written before each timed run, twice the H100/H200's 50 MB L2: a step reads a dense
/// weight from DRAM (the layers in between evict it), so a candidate is timed that way too.
/// (Timed back to back on L2-resident weights, the picks ran slower in the step: docs/PERF.md.)
const L2_FLUSH_BYTES: usize = 128 << 20;

/// `y[rows, n] = x[rows, k] w[n, k]^T` (+ `beta` y): its shape, which picks the algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GemmShape {
    pub rows: usize,
    pub n: usize,
    pub k: usize,
    pub accumulate: bool,
}

/// A shape's descriptors and algorithm (the descriptors live as long as the plan).
struct Plan {
    desc: lt::cublasLtMatmulDesc_t,
    a: lt::cublasLtMatrixLayout_t,
    b: lt::cublasLtMatrixLayout_t,
    c: lt::cublasLtMatrixLayout_t,
    algo: lt::cublasLtMatmulAlgo_t,
    workspace: usize,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: the descriptors were created by this plan and are destroyed once, here.
        unsafe {
            let _ = lt::cublasLtMatrixLayoutDestroy(self.a);
            let _ = lt::cublasLtMatrixLayoutDestroy(self.b);
            let _ = lt::cublasLtMatrixLayoutDestroy(self.c);
            let _ = lt::cublasLtMatmulDescDestroy(self.desc);
        }
    }
}

pub struct BlasLt {
    handle: lt::cublasLtHandle_t,
    plans: Mutex<HashMap<GemmShape, Plan>>,
}

// SAFETY: a cuBLASLt handle may be used from any thread; the plans are behind a mutex and the
// backend that owns this is used by one thread at a time.
unsafe impl Send for BlasLt {}
unsafe impl Sync for BlasLt {}

impl Drop for BlasLt {
    fn drop(&mut self) {
        self.plans.lock().unwrap().clear();
        // SAFETY: the handle was created in `new` and is destroyed once, after its plans.
        unsafe {
            let _ = lt::cublasLtDestroy(self.handle);
        }
    }
}

fn lt_err(what: impl Into<String>) -> impl FnOnce(CublasError) -> CudaError {
    let what = what.into();
    move |cause| CudaError::CublasLt { what, cause }
}

impl BlasLt {
    pub fn new() -> Result<Self> {
        // cudarc loads libcublasLt lazily and panics when it is absent: make that an error.
        let handle = std::panic::catch_unwind(cudarc::cublaslt::result::create_handle)
            .map_err(|_| CudaError::MissingLibrary { lib: "libcublasLt (CUDA 13)" })?
            .map_err(lt_err("cublasLtCreate"))?;
        Ok(BlasLt { handle, plans: Mutex::new(HashMap::new()) })
    }

    /// `y = x w^T (+ beta y)`, bf16 in, f32 out, on `stream` with its `workspace` (address,
    /// bytes): that stream's own, which no GEMM on another stream uses.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(&self, stream: &Arc<CudaStream>, workspace: (u64, usize), s: GemmShape, x: u64, w: u64, y: u64, beta: f32) -> Result<()> {
        let mut plans = self.plans.lock().unwrap();
        // A shape keeps its first plan, timed or not: a later change of algorithm would change
        // the bits of a forward that a graph recorded with the first.
        let p = match plans.entry(s) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let scratch = if is_capturing(stream)? {
                    None
                } else {
                    // SAFETY: the candidates only write it; freed (stream-ordered) after the timing.
                    Some(
                        unsafe { stream.alloc::<f32>(s.rows * s.n) }
                            .map_err(|e| CudaError::alloc("a GEMM timing output", s.rows * s.n * 4, e))?,
                    )
                };
                e.insert(self.plan(stream, workspace, s, x, w, scratch.as_ref())?)
            }
        };
        self.run(stream, workspace, p, &p.algo, x, w, y, beta)
    }

    /// Descriptors for `s`, and the fastest of cuBLASLt's candidates timed into `scratch` (or,
    /// without one, its first pick).
    fn plan(
        &self,
        stream: &Arc<CudaStream>,
        workspace: (u64, usize),
        s: GemmShape,
        x: u64,
        w: u64,
        scratch: Option<&CudaSlice<f32>>,
    ) -> Result<Plan> {
        let what = || format!("cuBLASLt plan for {}x{}x{}", s.rows, s.n, s.k);
        // Column-major, as cuBLAS sees row-major data: y^T (n x rows) = (w as k x n)^T x^T.
        let desc = cudarc::cublaslt::result::create_matmul_desc(lt::cublasComputeType_t::CUBLAS_COMPUTE_32F, lt::cudaDataType::CUDA_R_32F)
            .map_err(lt_err(what()))?;
        let layout = |t, r, c, ld| cudarc::cublaslt::result::create_matrix_layout(t, r as u64, c as u64, ld as i64).map_err(lt_err(what()));
        let mut plan = Plan {
            desc,
            a: layout(lt::cudaDataType::CUDA_R_16BF, s.k, s.n, s.k)?,
            b: layout(lt::cudaDataType::CUDA_R_16BF, s.k, s.rows, s.k)?,
            c: layout(lt::cudaDataType::CUDA_R_32F, s.n, s.rows, s.n)?,
            // SAFETY: plain data, all-zero valid; replaced below.
            algo: unsafe { std::mem::zeroed() },
            workspace: 0,
        };
        let transpose: i32 = 1; // CUBLAS_OP_T
                                // SAFETY: the descriptor is live; the attribute is an i32 read during the call.
        unsafe {
            lt::cublasLtMatmulDescSetAttribute(
                plan.desc,
                lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                &transpose as *const i32 as *const c_void,
                4,
            )
        }
        .result()
        .map_err(lt_err(what()))?;
        let pref = cudarc::cublaslt::result::create_matmul_pref().map_err(lt_err(what()))?;
        let max_ws = workspace.1 as u64;
        // SAFETY: the preference is live; the attribute is a u64 read during the call.
        let found = unsafe {
            let set = lt::cublasLtMatmulPreferenceSetAttribute(
                pref,
                lt::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &max_ws as *const u64 as *const c_void,
                8,
            )
            .result();
            let mut results: [lt::cublasLtMatmulHeuristicResult_t; CANDIDATES] = std::mem::zeroed();
            let mut count = 0i32;
            let got = set.and_then(|_| {
                lt::cublasLtMatmulAlgoGetHeuristic(
                    self.handle,
                    plan.desc,
                    plan.a,
                    plan.b,
                    plan.c,
                    plan.c,
                    pref,
                    CANDIDATES as i32,
                    results.as_mut_ptr(),
                    &mut count,
                )
                .result()
            });
            let _ = lt::cublasLtMatmulPreferenceDestroy(pref);
            got.map(|_| results[..count.max(0) as usize].to_vec())
        }
        .map_err(lt_err(what()))?;
        let usable: Vec<_> =
            found.iter().filter(|r| r.state == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS && r.workspaceSize <= workspace.1).collect();
        let Some(first) = usable.first() else {
            return Err(CudaError::CublasLt { what: what(), cause: CublasError(lt::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED) });
        };
        plan.algo = first.algo;
        plan.workspace = first.workspaceSize;
        let Some(out) = scratch else { return Ok(plan) };
        let out = out.device_ptr(stream).0;
        let event = || {
            stream
                .context()
                .new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(CudaError::driver(|| "creating the GEMM timing events".into()))
        };
        let (mut best, mut best_ws) = (f32::INFINITY, first.workspaceSize);
        // SAFETY: only written (zeroed) before each timed run; freed stream-ordered after.
        let mut flush =
            unsafe { stream.alloc::<u8>(L2_FLUSH_BYTES) }.map_err(|e| CudaError::alloc("the GEMM timing's L2 flush", L2_FLUSH_BYTES, e))?;
        let (start, end): (CudaEvent, CudaEvent) = (event()?, event()?);
        for r in &usable {
            plan.workspace = r.workspaceSize;
            // A candidate that fails to launch is skipped (the first pick's failure is reported).
            if self.run(stream, workspace, &plan, &r.algo, x, w, out, 0.0).is_err() {
                continue;
            }
            let mut ms = 0.0;
            for _ in 0..TIMED_RUNS {
                stream.memset_zeros(&mut flush).map_err(CudaError::driver(|| "flushing L2 before a GEMM timing".into()))?;
                start.record(stream).map_err(CudaError::driver(|| "recording a GEMM timing event".into()))?;
                self.run(stream, workspace, &plan, &r.algo, x, w, out, 0.0)?;
                end.record(stream).map_err(CudaError::driver(|| "recording a GEMM timing event".into()))?;
                ms += start.elapsed_ms(&end).map_err(CudaError::driver(|| "timing a GEMM candidate".into()))?;
            }
            if ms < best {
                (best, best_ws) = (ms, r.workspaceSize);
                plan.algo = r.algo;
            }
        }
        plan.workspace = best_ws;
        Ok(plan)
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        stream: &Arc<CudaStream>,
        workspace: (u64, usize),
        p: &Plan,
        algo: &lt::cublasLtMatmulAlgo_t,
        x: u64,
        w: u64,
        y: u64,
        beta: f32,
    ) -> Result<()> {
        let alpha = 1.0f32;
        // SAFETY: x, w, y are device buffers of at least rows*k, n*k and rows*n elements (the
        // plan's shape, the caller's buffers); the workspace is the stream's own, of
        // workspace.1 >= p.workspace bytes, used by no other stream.
        unsafe {
            lt::cublasLtMatmul(
                self.handle,
                p.desc,
                &alpha as *const f32 as *const c_void,
                w as *const c_void,
                p.a,
                x as *const c_void,
                p.b,
                &beta as *const f32 as *const c_void,
                y as *const c_void,
                p.c,
                y as *mut c_void,
                p.c,
                algo,
                workspace.0 as *mut c_void,
                p.workspace,
                stream.cu_stream() as lt::cudaStream_t,
            )
        }
        .result()
        .map_err(lt_err("cublasLtMatmul"))
    }
}

/// Whether `stream` is being recorded into a CUDA graph (nothing may be timed or synchronised).
fn is_capturing(stream: &CudaStream) -> Result<bool> {
    use cudarc::driver::sys;
    let mut status = sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
    // SAFETY: the stream is live; the driver writes one enum.
    unsafe { sys::cuStreamIsCapturing(stream.cu_stream(), &mut status) }
        .result()
        .map_err(CudaError::driver(|| "asking whether the stream is being captured".into()))?;
    Ok(status != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
}
