//! The only `unsafe` of the CUDA backend: probing for the driver library, loading the embedded fatbins, allocating
//! uninitialised device memory, launching kernels and calling cuBLAS. Each launch checks its
//! error and names the kernel. With `DLLM_CUDA_SYNC=1` every launch also synchronises, so an
//! asynchronous fault is reported against the kernel that caused it.

use super::error::{CudaError, Result};
use cudarc::cublas::{sys as cublas_sys, CudaBlas};
use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// csrc/params.h through bindgen (build.rs): launch structs, tile constants, shared-memory sizes.
pub mod params {
    #![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
    include!(concat!(env!("OUT_DIR"), "/params.rs"));
}
use params::*;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/kernels_embed.rs"));
}
pub use embedded::Kernel;

// SAFETY: each params struct is plain #[repr(C)] data (device pointers as u64, 32-bit scalars)
// whose layout build.rs checks against csrc/params.h on both sides.
unsafe impl DeviceRepr for EmbedParams {}
unsafe impl DeviceRepr for GatherParams {}
unsafe impl DeviceRepr for NormParams {}
unsafe impl DeviceRepr for RopeParams {}
unsafe impl DeviceRepr for AttnParams {}
unsafe impl DeviceRepr for RouterParams {}
unsafe impl DeviceRepr for RouterBlockParams {}
unsafe impl DeviceRepr for RouteParams {}
unsafe impl DeviceRepr for PermuteParams {}
unsafe impl DeviceRepr for MoeGemmParams {}
unsafe impl DeviceRepr for DenseStreamParams {}
unsafe impl DeviceRepr for QuantizeFp8Params {}
unsafe impl DeviceRepr for QuantizeRowsParams {}
unsafe impl DeviceRepr for CombineParams {}
unsafe impl DeviceRepr for SiluMulParams {}
unsafe impl DeviceRepr for PickParams {}
unsafe impl DeviceRepr for LmHeadPickParams {}
unsafe impl DeviceRepr for QkvRopeParams {}
unsafe impl DeviceRepr for UnmaskParams {}
unsafe impl DeviceRepr for InitParams {}
unsafe impl DeviceRepr for SpinParams {}
unsafe impl DeviceRepr for SampleParams {}
unsafe impl DeviceRepr for RowSampling {}
unsafe impl DeviceRepr for RowTopKParams {}

/// The bytes of a TMA tensor map (CUtensorMap), as the kernels read it from device memory.
pub const TENSOR_MAP_BYTES: usize = std::mem::size_of::<cudarc::driver::sys::CUtensorMap>();

/// cuBLAS's workspace, ours: cuBLAS must not allocate one inside a CUDA graph capture
/// (graph.rs); 32 MiB is what NVIDIA advises on Hopper.
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

pub struct Kernels {
    pub stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// Handed to cuBLAS (kept alive as long as the handle).
    _blas_workspace: CudaSlice<u8>,
    /// A second stream for work that runs beside the main one's (see [`Kernels::beside`]).
    side: Side,
    /// Launches and GEMMs go to the side stream (inside [`Kernels::beside`]).
    on_side: AtomicBool,
    /// Indexed by `Kernel as usize` (the order of `Kernel::ALL`).
    fns: Vec<CudaFunction>,
    sync_each: bool,
    /// `CudaOptions::profile_kernels`: a CUDA event pair around every launch, read back when the
    /// profile is asked for (see [`Kernels::hold_stream`] for keeping launch gaps out).
    prof: Option<Mutex<Profile>>,
    /// Kernel -> the dynamic shared memory it is known to launch with (its limit raised where the
    /// default is too small; the driver calls are made once per size).
    smem_allowed: Mutex<HashMap<Kernel, u32>>,
    /// Kernel -> CTAs resident on the whole GPU at once ([`Kernels::resident_ctas`]).
    resident: Mutex<HashMap<Kernel, u32>>,
    /// Kernel -> whether its cluster of more than 8 CTAs fits this GPU ([`Kernels::large_cluster_fits`]).
    large_clusters: Mutex<HashMap<Kernel, bool>>,
}

/// The side stream, with its own cuBLAS handle and workspace (two GEMMs in flight at once must
/// not share one), and the events that fork it from the main stream and join it back. The events
/// are made once: inside a CUDA graph capture they become the graph's fork and join edges.
struct Side {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    _blas_workspace: CudaSlice<u8>,
    fork: CudaEvent,
    join: CudaEvent,
}

/// A cuBLAS handle on `stream` with a workspace of ours (cuBLAS must not allocate one inside a
/// CUDA graph capture), returned with it: the workspace must outlive the handle.
fn blas_on(stream: &Arc<CudaStream>) -> Result<(CudaBlas, CudaSlice<u8>)> {
    // cudarc loads libcublas lazily and panics when it is absent: make that an error.
    let blas = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| CudaBlas::new(stream.clone())))
        .map_err(|_| CudaError::MissingLibrary { lib: "libcublas (CUDA 13)" })?
        .map_err(|cause| CudaError::Cublas { what: "cublasCreate".into(), cause })?;
    // SAFETY: cuBLAS writes the workspace only inside its own launches.
    let workspace = unsafe { stream.alloc::<u8>(CUBLAS_WORKSPACE_BYTES) }
        .map_err(|e| CudaError::alloc("the cuBLAS workspace", CUBLAS_WORKSPACE_BYTES, e))?;
    let ws = workspace.device_ptr(stream).0;
    // SAFETY: the handle is live and the workspace is a device buffer of that many bytes that
    // outlives it (the caller keeps both, the buffer dropped after the handle).
    unsafe { cublas_sys::cublasSetWorkspace_v2(*blas.handle(), ws as *mut std::ffi::c_void, CUBLAS_WORKSPACE_BYTES) }
        .result()
        .map_err(|cause| CudaError::Cublas { what: "cublasSetWorkspace".into(), cause })?;
    Ok((blas, workspace))
}

#[derive(Default)]
struct Profile {
    /// Launches whose events have not been read yet: (kernel, start, end).
    pending: Vec<(String, CudaEvent, CudaEvent)>,
    /// Kernel -> (total ms, calls).
    totals: HashMap<String, (f64, u64)>,
}

/// How long [`Kernels::hold_stream`] holds the stream: longer than the host takes to queue
/// one forward of the largest shapes with two events per launch.
const PROFILE_HOLD_US: u32 = 20_000;

/// A recorded CUDA graph (graph.rs), owned by one backend.
pub struct Graph(cudarc::driver::CudaGraph);

// SAFETY: CUDA asks only that a graph's calls be serialised; a Graph is reached only through its
// backend, which one thread at a time owns (it moves to the engine thread, it is never shared).
unsafe impl Send for Graph {}

impl Graph {
    pub fn launch(&self) -> Result<()> {
        self.0.launch().map_err(CudaError::driver(|| "replaying the step's CUDA graph".into()))
    }
}

/// Whether the NVIDIA driver library can be loaded (cudarc panics when it cannot).
pub fn driver_library_present() -> bool {
    ["libcuda.so.1", "libcuda.so"].iter().any(|name| {
        // SAFETY: loading the NVIDIA driver library runs only its own initialisers; the handle
        // is dropped at once (cudarc loads it again for real).
        unsafe { libloading::Library::new(*name) }.is_ok()
    })
}

/// Threads a CTA of the grid-stride kernels ([`Kernels::launch_grid_stride`]), and the most CTAs
/// they are launched with (past it each thread strides over several items).
const GRID_STRIDE_THREADS: usize = 256;
const GRID_STRIDE_MAX_CTAS: usize = 65536;

/// Threads a CTA of the row copies (embed_gather, gather_rows: one CTA a row, its threads
/// striding over the row's columns).
pub const ROW_COPY_THREADS: u32 = 256;

/// The raw device address of a buffer (what the params structs carry).
pub fn ptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    s.device_ptr(stream).0
}

impl Kernels {
    /// `profile`: time every launch (see [`Kernels::profile`]).
    pub fn new(ctx: &Arc<CudaContext>, profile: bool) -> Result<Self> {
        // SAFETY: the side stream's work is ordered by our own fork and join events, around
        // buffers allocated and freed on the main stream outside them, so cudarc's per-buffer
        // event tracking is not needed.
        unsafe { ctx.disable_event_tracking() };
        // Streams of our own: the legacy default stream cannot be captured into a CUDA graph.
        let stream = ctx.new_stream().map_err(CudaError::driver(|| "creating the backend's CUDA stream".into()))?;
        let (blas, workspace) = blas_on(&stream)?;
        let side_stream = ctx.new_stream().map_err(CudaError::driver(|| "creating the backend's side stream".into()))?;
        let (side_blas, side_workspace) = blas_on(&side_stream)?;
        let event = || ctx.new_event(None).map_err(CudaError::driver(|| "creating the side stream's events".into()));
        let side = Side { stream: side_stream, blas: side_blas, _blas_workspace: side_workspace, fork: event()?, join: event()? };
        let mut modules = HashMap::new();
        for (module, fatbin) in embedded::MODULES {
            let m = ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(fatbin.to_vec()))
                .map_err(|cause| CudaError::ModuleLoad { module, cause })?;
            modules.insert(*module, m);
        }
        let mut fns = Vec::with_capacity(Kernel::ALL.len());
        for (i, &k) in Kernel::ALL.iter().enumerate() {
            debug_assert_eq!(k as usize, i);
            let m = &modules[k.module()];
            fns.push(m.load_function(k.symbol()).map_err(CudaError::driver(|| format!("loading kernel {k} from {}.cu", k.module())))?);
        }
        // A debugging switch, so an environment variable rather than an option.
        let sync_each = std::env::var("DLLM_CUDA_SYNC").map(|v| v == "1").unwrap_or(false);
        let prof = profile.then(|| Mutex::new(Profile::default()));
        Ok(Kernels {
            stream,
            blas,
            _blas_workspace: workspace,
            side,
            on_side: AtomicBool::new(false),
            fns,
            sync_each,
            prof,
            smem_allowed: Mutex::new(HashMap::new()),
            resident: Mutex::new(HashMap::new()),
            large_clusters: Mutex::new(HashMap::new()),
        })
    }

    /// Whether every launch is timed (a forward that is never recorded as a CUDA graph).
    pub fn profiling(&self) -> bool {
        self.prof.is_some()
    }

    /// Whether every launch synchronises (`DLLM_CUDA_SYNC=1`; never inside a CUDA graph).
    pub fn syncs_each_launch(&self) -> bool {
        self.sync_each
    }

    /// Start recording this stream's launches (thread-local mode: other threads, such as the
    /// other tensor-parallel ranks capturing their own streams, are not disturbed).
    pub fn begin_capture(&self) -> Result<()> {
        use cudarc::driver::sys::CUstreamCaptureMode as M;
        self.stream
            .begin_capture(M::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(CudaError::driver(|| "starting a CUDA graph capture".into()))
    }

    /// Stop recording; the launches since [`Kernels::begin_capture`] as a graph ready to launch.
    pub fn end_capture(&self) -> Result<Graph> {
        let g = self
            .stream
            .end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0))
            .map_err(CudaError::driver(|| "ending a CUDA graph capture".into()))?
            .ok_or_else(|| CudaError::Driver {
                what: "ending a CUDA graph capture: nothing was recorded".into(),
                cause: cudarc::driver::DriverError(cudarc::driver::sys::cudaError_enum::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED),
            })?;
        g.upload().map_err(CudaError::driver(|| "uploading a CUDA graph".into()))?;
        Ok(Graph(g))
    }

    pub fn prof_start(&self) -> Option<CudaEvent> {
        self.prof.as_ref()?;
        self.stream.record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT)).ok()
    }

    pub fn prof_end(&self, name: &str, start: Option<CudaEvent>) {
        if let (Some(p), Some(start)) = (&self.prof, start) {
            if let Ok(end) = self.stream.record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT)) {
                p.lock().unwrap().pending.push((name.to_string(), start, end));
            }
        }
    }

    /// Profiling only: hold the stream with a sleeping kernel, so the host queues the launches
    /// that follow (one forward) before the GPU runs them; each event pair then times its kernel
    /// alone, not the host's launch latency. A no-op unless profiling.
    pub fn hold_stream(&self) -> Result<()> {
        if self.prof.is_none() {
            return Ok(());
        }
        let f = &self.fns[Kernel::SpinWait as usize];
        let p = SpinParams { us: PROFILE_HOLD_US };
        let mut b = self.stream.launch_builder(f);
        b.arg(&p);
        let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: spin_wait reads only its by-value params.
        unsafe { b.launch(cfg) }.map_err(|cause| CudaError::Launch { kernel: Kernel::SpinWait, cause })?;
        Ok(())
    }

    /// (name, total ms, calls), largest first; empty unless profiling. Waits for
    /// the stream, then reads the launches' events.
    pub fn profile(&self) -> Vec<(String, f64, u64)> {
        let Some(p) = &self.prof else { return vec![] };
        let _ = self.stream.synchronize();
        let mut p = p.lock().unwrap();
        for (name, start, end) in std::mem::take(&mut p.pending) {
            if let Ok(ms) = start.elapsed_ms(&end) {
                let e = p.totals.entry(name).or_insert((0.0, 0));
                e.0 += ms as f64;
                e.1 += 1;
            }
        }
        let mut v: Vec<_> = p.totals.iter().map(|(k, &(t, n))| (k.clone(), t, n)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }

    pub fn profile_reset(&self) {
        if let Some(p) = &self.prof {
            let _ = self.stream.synchronize();
            let mut p = p.lock().unwrap();
            p.pending.clear();
            p.totals.clear();
        }
    }

    /// Launch `kernel` with one params struct. The params must point at live device buffers of
    /// the sizes the kernel's comment in csrc/ states; the callers in mod.rs build them so.
    pub fn launch<P: DeviceRepr>(&self, kernel: Kernel, grid: (u32, u32, u32), block: u32, p: &P) -> Result<()> {
        self.launch_smem(kernel, grid, block, 0, p)
    }

    /// A grid-stride kernel (init_normal, silu_mul: any block size, each thread striding over
    /// `items` work items) at GRID_STRIDE_THREADS a CTA, one item a thread up to
    /// GRID_STRIDE_MAX_CTAS CTAs, beyond which the threads stride.
    pub fn launch_grid_stride<P: DeviceRepr>(&self, kernel: Kernel, items: usize, p: &P) -> Result<()> {
        let ctas = items.div_ceil(GRID_STRIDE_THREADS).min(GRID_STRIDE_MAX_CTAS);
        self.launch(kernel, (ctas as u32, 1, 1), GRID_STRIDE_THREADS as u32, p)
    }

    /// [`Kernels::launch`] with `smem` bytes of dynamic shared memory (above 48 KiB the kernel's
    /// limit is raised first, as the driver requires).
    pub fn launch_smem<P: DeviceRepr>(&self, kernel: Kernel, grid: (u32, u32, u32), block: u32, smem: u32, p: &P) -> Result<()> {
        self.launch_as(kernel, kernel.symbol(), grid, block, smem, p)
    }

    /// [`Kernels::launch_smem`], profiled under `name` (one kernel serving several projections).
    pub fn launch_as<P: DeviceRepr>(&self, kernel: Kernel, name: &str, grid: (u32, u32, u32), block: u32, smem: u32, p: &P) -> Result<()> {
        if !self.ready(kernel, grid, smem)? {
            return Ok(());
        }
        let f = &self.fns[kernel as usize];
        let cfg = LaunchConfig { grid_dim: grid, block_dim: (block, 1, 1), shared_mem_bytes: smem };
        let t0 = self.prof_start();
        let mut b = self.current().launch_builder(f);
        b.arg(p);
        // SAFETY: `p` carries device pointers into allocations that outlive the launch (they are
        // owned by the backend or by the caller's activations, freed stream-ordered after it).
        unsafe { b.launch(cfg) }.map_err(|cause| CudaError::Launch { kernel, cause })?;
        self.prof_end(name, t0);
        if self.sync_each {
            self.stream.synchronize().map_err(|cause| CudaError::KernelFailed { kernel: kernel.to_string(), cause })?;
        }
        Ok(())
    }

    /// [`Kernels::launch_smem`] as a programmatic dependent of the stream's previous kernel (PDL,
    /// sm_90): the kernel's CTAs may start while that one still runs, once it releases them
    /// (`pdl_release`, csrc/common.cuh), and must `pdl_wait` before they read what it writes.
    /// Inside a CUDA graph capture the edge is recorded as programmatic. While profiling (the
    /// events between launches would time the overlap) or synchronising each launch, a plain one.
    pub fn launch_dependent<P: DeviceRepr>(&self, kernel: Kernel, grid: (u32, u32, u32), block: u32, smem: u32, p: &P) -> Result<()> {
        self.launch_dependent_as(kernel, kernel.symbol(), grid, block, smem, p)
    }

    /// [`Kernels::launch_dependent`], profiled under `name` (as [`Kernels::launch_as`]).
    pub fn launch_dependent_as<P: DeviceRepr>(
        &self,
        kernel: Kernel,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        p: &P,
    ) -> Result<()> {
        use cudarc::driver::sys;
        if self.prof.is_some() || self.sync_each {
            return self.launch_as(kernel, name, grid, block, smem, p);
        }
        if !self.ready(kernel, grid, smem)? {
            return Ok(());
        }
        let f = &self.fns[kernel as usize];
        let stream = self.current();
        stream.context().bind_to_thread().map_err(CudaError::driver(|| "binding the CUDA context".into()))?;
        // SAFETY: a plain C struct of an id and a union of integers, all-zero valid; set next.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let cfg = sys::CUlaunchConfig {
            gridDimX: grid.0,
            gridDimY: grid.1,
            gridDimZ: grid.2,
            blockDimX: block,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: smem,
            hStream: stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        // The kernel's one argument, the params struct, by address (the driver copies it).
        let mut args = [p as *const P as *mut std::ffi::c_void];
        // SAFETY: `f` is a kernel of this context taking one params struct whose device pointers
        // outlive the launch (as in launch_as); cfg, attr and args live across the call.
        unsafe { sys::cuLaunchKernelEx(&cfg, f.cu_function(), args.as_mut_ptr(), std::ptr::null_mut()) }
            .result()
            .map_err(|cause| CudaError::Launch { kernel, cause })?;
        Ok(())
    }

    /// What every launch path does first: false for an empty grid (nothing to launch), else the
    /// kernel's shared-memory limit raised to `smem` (see [`Self::allow_smem`]).
    fn ready(&self, kernel: Kernel, grid: (u32, u32, u32), smem: u32) -> Result<bool> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(false);
        }
        self.allow_smem(kernel, smem)?;
        Ok(true)
    }

    /// Above the default 48 KiB of a kernel's shared memory (static and dynamic together) its
    /// dynamic limit must be raised; once per kernel and size.
    fn allow_smem(&self, kernel: Kernel, smem: u32) -> Result<()> {
        if smem > 0 && smem > self.smem_allowed.lock().unwrap().get(&kernel).copied().unwrap_or(0) {
            use cudarc::driver::sys::CUfunction_attribute_enum as A;
            // Driver calls outside cudarc's launch path need the context current on this thread.
            self.stream.context().bind_to_thread().map_err(CudaError::driver(|| "binding the CUDA context".into()))?;
            let fixed = self.fns[kernel as usize]
                .get_attribute(A::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
                .map_err(CudaError::driver(|| format!("kernel {kernel}: reading its static shared memory")))?;
            if smem as i64 + fixed as i64 <= 48 * 1024 {
                self.smem_allowed.lock().unwrap().insert(kernel, smem); // fits the default: nothing to raise
                return Ok(());
            }
            self.fns[kernel as usize]
                .set_attribute(A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32)
                .map_err(CudaError::driver(|| format!("kernel {kernel}: allowing {smem} bytes of shared memory")))?;
            self.smem_allowed.lock().unwrap().insert(kernel, smem);
        }
        Ok(())
    }

    /// Whether `kernel`, compiled for a cluster of `cluster` CTAs, more than 8 (a non-portable
    /// size: up to 16 on Hopper), can be placed on this GPU with `threads` threads and `smem`
    /// dynamic shared bytes a CTA: such a cluster must be allowed per kernel, and needs that many
    /// SMs free in one GPC, which a part with fewer working SMs there may not have. Asked once
    /// per kernel; false where the driver refuses it.
    pub fn large_cluster_fits(&self, kernel: Kernel, cluster: u32, threads: u32, smem: u32) -> Result<bool> {
        if let Some(&fits) = self.large_clusters.lock().unwrap().get(&kernel) {
            return Ok(fits);
        }
        self.allow_smem(kernel, smem)?;
        use cudarc::driver::sys::CUfunction_attribute_enum as A;
        self.stream.context().bind_to_thread().map_err(CudaError::driver(|| "binding the CUDA context".into()))?;
        let f = &self.fns[kernel as usize];
        let cfg = LaunchConfig { grid_dim: (cluster, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: smem };
        // The compiled cluster size comes with the kernel; a refusal of either call is a no.
        let fits = f.set_attribute(A::CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1).is_ok()
            && f.occupancy_max_active_clusters(cfg, &self.stream).is_ok_and(|n| n > 0);
        self.large_clusters.lock().unwrap().insert(kernel, fits);
        Ok(fits)
    }

    /// How many CTAs of `kernel` (`threads` each, `smem` dynamic shared bytes) the whole GPU holds
    /// at once: the grid of a persistent kernel. Asked of the driver once per kernel.
    pub fn resident_ctas(&self, kernel: Kernel, threads: u32, smem: u32) -> Result<u32> {
        if let Some(&n) = self.resident.lock().unwrap().get(&kernel) {
            return Ok(n);
        }
        self.allow_smem(kernel, smem)?; // the occupancy counts the raised limit
        use cudarc::driver::sys::CUdevice_attribute_enum as D;
        // Driver calls outside cudarc's launch path need the context current on this thread.
        let ctx = self.stream.context();
        ctx.bind_to_thread().map_err(CudaError::driver(|| "binding the CUDA context".into()))?;
        let sms =
            ctx.attribute(D::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).map_err(CudaError::driver(|| "reading the SM count".into()))?;
        let per_sm = self.fns[kernel as usize]
            .occupancy_max_active_blocks_per_multiprocessor(threads, smem as usize, None)
            .map_err(CudaError::driver(|| format!("kernel {kernel}: occupancy")))?;
        let n = (sms.max(1) as u32) * per_sm.max(1);
        self.resident.lock().unwrap().insert(kernel, n);
        Ok(n)
    }

    /// A TMA tensor map (CUtensorMap, its TENSOR_MAP_BYTES bytes) of the bf16 tensor at device address `ptr`
    /// with `dims` (innermost first, packed: each dim's stride is the product of those inside it)
    /// read in boxes of `bbox`, 128-byte swizzled in shared memory, zeros past the dims
    /// (csrc/tma.cuh reads it).
    pub fn tensor_map_bf16_3d(ptr: u64, dims: [u64; 3], bbox: [u32; 3]) -> Result<[u8; TENSOR_MAP_BYTES]> {
        use cudarc::driver::sys as d;
        let strides = [dims[0] * 2, dims[0] * dims[1] * 2];
        let elem_strides = [1u32; 3];
        let mut map = std::mem::MaybeUninit::<d::CUtensorMap>::zeroed();
        // SAFETY: the arrays are live locals of the lengths rank 3 asks (dims and box 3, strides
        // 2); the driver only encodes them into `map`, which it writes whole, and reads no device
        // memory.
        unsafe {
            d::cuTensorMapEncodeTiled(
                map.as_mut_ptr(),
                d::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                3,
                ptr as *mut std::ffi::c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                bbox.as_ptr(),
                elem_strides.as_ptr(),
                d::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                d::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
                d::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                d::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        }
        .result()
        .map_err(CudaError::driver(|| format!("encoding a TMA tensor map of dims {dims:?}, box {bbox:?}")))?;
        // SAFETY: the call succeeded, so it wrote the map.
        let map = unsafe { map.assume_init() };
        let mut bytes = [0u8; TENSOR_MAP_BYTES];
        for (b, w) in bytes.chunks_exact_mut(8).zip(map.opaque) {
            b.copy_from_slice(&w.to_ne_bytes());
        }
        Ok(bytes)
    }

    /// A copy of `v` on the device (one element, uninitialised, for an empty `v`).
    pub fn upload<T: DeviceRepr>(&self, v: &[T], what: &str) -> Result<CudaSlice<T>> {
        if v.is_empty() {
            return self.alloc::<T>(1, what);
        }
        self.stream.clone_htod(v).map_err(|e| CudaError::upload(what, std::mem::size_of_val(v), e))
    }

    /// Uninitialised device memory; an out-of-memory is an error naming what was being allocated.
    pub fn alloc<T: DeviceRepr>(&self, n: usize, what: &str) -> Result<CudaSlice<T>> {
        debug_assert!(
            !self.on_side.load(Ordering::Relaxed),
            "allocating {what} inside Kernels::beside (the allocator orders it on the main stream)"
        );
        // SAFETY: every buffer from here is written by a kernel or a copy before it is read
        // (the tests poison outputs to check this).
        unsafe { self.stream.alloc::<T>(n.max(1)) }.map_err(|e| CudaError::alloc(what, n * std::mem::size_of::<T>(), e))
    }

    /// Row-major `y[rows, n] = x[rows, k] w[n, k]^T` with bf16 inputs and f32 output (cuBLAS,
    /// fp32 accumulate). `beta = 1` accumulates into y.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bf16_f32(&self, what: &str, x: u64, w: u64, y: u64, rows: usize, n: usize, k: usize, beta: f32) -> Result<()> {
        self.gemm_bf16(what, x, w, y, cublas_sys::cudaDataType_t::CUDA_R_32F, rows, n, k, beta)
    }

    /// [`Kernels::gemm_bf16_f32`] with y in bf16: the fp32 accumulators rounded once.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bf16_bf16(&self, what: &str, x: u64, w: u64, y: u64, rows: usize, n: usize, k: usize) -> Result<()> {
        self.gemm_bf16(what, x, w, y, cublas_sys::cudaDataType_t::CUDA_R_16BF, rows, n, k, 0.0)
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm_bf16(
        &self,
        what: &str,
        x: u64,
        w: u64,
        y: u64,
        y_type: cublas_sys::cudaDataType_t,
        rows: usize,
        n: usize,
        k: usize,
        beta: f32,
    ) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let (alpha, beta) = (1.0f32, beta);
        // cuBLAS runs in the thread's current context (the engine may live on another thread).
        self.stream.context().bind_to_thread().map_err(CudaError::driver(|| "binding the CUDA context".into()))?;
        let t0 = self.prof_start();
        // Column-major view: y^T (n x rows) = w (k x n)^T * x^T (k x rows).
        // SAFETY: x, w, y are device buffers of at least rows*k, n*k and rows*n elements (y of
        // y_type's).
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.current_blas().handle(),
                cublas_sys::cublasOperation_t::CUBLAS_OP_T,
                cublas_sys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                rows as i32,
                k as i32,
                &alpha as *const f32 as *const _,
                w as *const _,
                cublas_sys::cudaDataType_t::CUDA_R_16BF,
                k as i32,
                x as *const _,
                cublas_sys::cudaDataType_t::CUDA_R_16BF,
                k as i32,
                &beta as *const f32 as *const _,
                y as *mut _,
                y_type,
                n as i32,
                cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|cause| CudaError::Cublas { what: format!("GEMM {what} ({rows}x{n}x{k})"), cause })?;
        self.prof_end(&format!("cublas {what}"), t0);
        if self.sync_each {
            self.stream.synchronize().map_err(|cause| CudaError::KernelFailed { kernel: format!("cuBLAS GEMM {what}"), cause })?;
        }
        Ok(())
    }

    /// The stream launches go to: the side stream inside [`Kernels::beside`], else the main one.
    fn current(&self) -> &Arc<CudaStream> {
        if self.on_side.load(Ordering::Relaxed) {
            &self.side.stream
        } else {
            &self.stream
        }
    }

    fn current_blas(&self) -> &CudaBlas {
        if self.on_side.load(Ordering::Relaxed) {
            &self.side.blas
        } else {
            &self.blas
        }
    }

    /// Run `f`'s launches and GEMMs on the side stream, started after the main stream's work so
    /// far; returns true when it did, and [`Kernels::join_side`] is then owed before anything on
    /// the main stream reads what `f` wrote. Where launches are timed or synchronised one by one
    /// (`bench kernels`, DLLM_CUDA_SYNC) `f` runs on the main stream in order and this returns
    /// false. `f` must not allocate or free device memory: the buffers it uses are allocated
    /// before and freed after the join, on the main stream, whose order the allocator keeps.
    pub fn beside<E: From<CudaError>>(&self, f: impl FnOnce() -> std::result::Result<(), E>) -> std::result::Result<bool, E> {
        if self.prof.is_some() || self.sync_each {
            f()?;
            return Ok(false);
        }
        self.side.fork.record(&self.stream).map_err(CudaError::driver(|| "forking the side stream".into()))?;
        self.side.stream.wait(&self.side.fork).map_err(CudaError::driver(|| "forking the side stream".into()))?;
        self.on_side.store(true, Ordering::Relaxed);
        let r = f();
        self.on_side.store(false, Ordering::Relaxed);
        r.map(|()| true)
    }

    /// Make the main stream wait for the side stream's work (after a fork).
    pub fn join_side(&self) -> Result<()> {
        self.side.join.record(&self.side.stream).map_err(CudaError::driver(|| "joining the side stream".into()))?;
        self.stream.wait(&self.side.join).map_err(CudaError::driver(|| "joining the side stream".into()))
    }

    pub fn sync(&self, what: &str) -> Result<()> {
        self.stream.synchronize().map_err(CudaError::driver(|| format!("CUDA error surfaced at {what}")))
    }
}
