//! NCCL, loaded at run time: the tensor-parallel ranks' all-reduce. The binary links no CUDA
//! library; `libnccl.so.2` (the `nvidia-nccl-cu13` wheel's `nvidia/nccl/lib`, or a system
//! install) is found through the dynamic loader's path. cudarc's NCCL module is not used: its
//! loader looks for `libnccl.so` and versioned names other than `.so.2`, which is the name the
//! wheel and the distributions ship, and it panics when none loads.
//!
//! NVLink multicast (NVLS) stays whatever the environment says: the GPU machines set
//! `NCCL_NVLS_ENABLE=0`, and nothing here overrides it.
//!
//! This file and kernels.rs are the CUDA layer's only `unsafe`: each call passes buffers the
//! caller owns on the stream the communicator's rank computes on.

use super::error::CudaError;
use cudarc::driver::sys::CUstream;
use cudarc::driver::CudaStream;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The names tried, in order (each through the loader's search: LD_LIBRARY_PATH, the cache).
const LIBRARY_NAMES: [&str; 2] = ["libnccl.so.2", "libnccl.so"];

type RawComm = *mut c_void;
const NCCL_SUCCESS: c_int = 0;
const NCCL_FLOAT32: c_int = 7;
const NCCL_SUM: c_int = 0;

struct Api {
    _lib: libloading::Library,
    comm_init_all: unsafe extern "C" fn(*mut RawComm, c_int, *const c_int) -> c_int,
    comm_destroy: unsafe extern "C" fn(RawComm) -> c_int,
    comm_abort: unsafe extern "C" fn(RawComm) -> c_int,
    all_reduce: unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, RawComm, CUstream) -> c_int,
    get_error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    get_version: unsafe extern "C" fn(*mut c_int) -> c_int,
}

fn load() -> Result<Api, String> {
    let mut tried = vec![];
    for name in LIBRARY_NAMES {
        // SAFETY: loading NCCL runs only its own initialisers.
        let lib = match unsafe { libloading::Library::new(name) } {
            Ok(l) => l,
            Err(e) => {
                tried.push(format!("{name} ({e})"));
                continue;
            }
        };
        // SAFETY: the signatures are NCCL 2's (nccl.h); each symbol is looked up by its name.
        let api = unsafe {
            let sym = |s: &str| format!("{name} has no symbol {s}");
            Api {
                comm_init_all: *lib.get(b"ncclCommInitAll\0").map_err(|_| sym("ncclCommInitAll"))?,
                comm_destroy: *lib.get(b"ncclCommDestroy\0").map_err(|_| sym("ncclCommDestroy"))?,
                comm_abort: *lib.get(b"ncclCommAbort\0").map_err(|_| sym("ncclCommAbort"))?,
                all_reduce: *lib.get(b"ncclAllReduce\0").map_err(|_| sym("ncclAllReduce"))?,
                get_error_string: *lib.get(b"ncclGetErrorString\0").map_err(|_| sym("ncclGetErrorString"))?,
                get_version: *lib.get(b"ncclGetVersion\0").map_err(|_| sym("ncclGetVersion"))?,
                _lib: lib,
            }
        };
        return Ok(api);
    }
    Err(format!(
        "NCCL could not be loaded (tried {}); tensor parallelism needs it: install the nvidia-nccl-cu13 wheel \
         (or a system NCCL 2) and put the folder holding libnccl.so.2 on LD_LIBRARY_PATH",
        tried.join(", ")
    ))
}

fn api() -> Result<&'static Api, CudaError> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(|e| CudaError::Nccl(e.clone()))
}

fn check(what: &str, code: c_int) -> Result<(), CudaError> {
    if code == NCCL_SUCCESS {
        return Ok(());
    }
    let text = match api() {
        // SAFETY: ncclGetErrorString returns a static NUL-terminated string for any code.
        Ok(a) => unsafe { CStr::from_ptr((a.get_error_string)(code)) }.to_string_lossy().into_owned(),
        Err(_) => String::new(),
    };
    Err(CudaError::Nccl(format!("{what} failed: NCCL error {code} ({text})")))
}

/// NCCL's version as `major.minor.patch`.
pub fn version() -> Result<String, CudaError> {
    let mut v: c_int = 0;
    // SAFETY: writes one int.
    check("ncclGetVersion", unsafe { (api()?.get_version)(&mut v) })?;
    Ok(format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100))
}

/// One rank's communicator.
pub struct Comm {
    raw: RawComm,
    pub rank: usize,
    pub size: usize,
    group: Arc<GroupAbort>,
}

// SAFETY: a communicator is used by one thread at a time (its rank's); NCCL allows a
// communicator to be created on one thread and used on another.
unsafe impl Send for Comm {}

/// Aborts every communicator of a group, from any thread: ranks blocked in a collective that a
/// failed rank never joined wake with an error (NCCL's ncclCommAbort). Used once, on the way to
/// stopping the group.
pub struct GroupAbort {
    raws: Vec<usize>,
    aborted: AtomicBool,
}

impl GroupAbort {
    pub fn abort(&self) {
        if self.aborted.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Ok(a) = api() {
            for &raw in &self.raws {
                // SAFETY: each communicator is live (destroyed only after this flag is checked);
                // NCCL documents ncclCommAbort as callable while other threads use the communicator.
                unsafe { (a.comm_abort)(raw as RawComm) };
            }
        }
    }
}

impl Comm {
    /// Communicators for the GPUs `ordinals` of this process, rank i on `ordinals[i]`.
    pub fn init_all(ordinals: &[usize]) -> Result<Vec<Comm>, CudaError> {
        let a = api()?;
        let devs: Vec<c_int> = ordinals.iter().map(|&o| o as c_int).collect();
        let mut raw = vec![std::ptr::null_mut(); devs.len()];
        // SAFETY: `raw` has room for one communicator per device.
        check("ncclCommInitAll", unsafe { (a.comm_init_all)(raw.as_mut_ptr(), devs.len() as c_int, devs.as_ptr()) })?;
        let size = raw.len();
        let group = Arc::new(GroupAbort { raws: raw.iter().map(|&r| r as usize).collect(), aborted: AtomicBool::new(false) });
        Ok(raw.into_iter().enumerate().map(|(rank, raw)| Comm { raw, rank, size, group: group.clone() }).collect())
    }

    /// The handle that aborts this communicator's whole group.
    pub fn group_abort(&self) -> Arc<GroupAbort> {
        self.group.clone()
    }

    /// `buf[0..n] =` the sum over the ranks of their `buf`, in place, queued on `stream`.
    pub fn all_reduce_sum_f32(&self, buf: u64, n: usize, stream: &CudaStream) -> Result<(), CudaError> {
        let a = api()?;
        let (p, stream) = (buf as *mut c_void, stream.cu_stream());
        // SAFETY: `buf` is a live device buffer of at least `n` f32 on this rank's device, used in
        // order on `stream`; every rank makes the same call.
        check("ncclAllReduce", unsafe { (a.all_reduce)(p, p, n, NCCL_FLOAT32, NCCL_SUM, self.raw, stream) })
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        if self.group.aborted.load(Ordering::SeqCst) {
            return; // ncclCommAbort freed it
        }
        if let Ok(a) = api() {
            // SAFETY: the communicator is live and dropped once.
            unsafe { (a.comm_destroy)(self.raw) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where NCCL is installed this reads its version; where it is not (CI), the error names every
    /// library tried and how to provide one.
    #[test]
    fn a_missing_nccl_is_an_error_naming_what_was_searched() {
        match version() {
            Ok(v) => assert!(v.starts_with("2."), "NCCL {v}"),
            Err(e) => {
                let m = e.to_string();
                assert!(m.contains("libnccl.so.2") && m.contains("libnccl.so (") && m.contains("LD_LIBRARY_PATH"), "{m}");
            }
        }
    }
}
