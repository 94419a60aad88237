//! Opening the device, and moving buffers between host and device (uploads, downloads,
//! allocations that honour the poison option).

use super::error::{CudaError, Result};
use super::kernels::{driver_library_present, params::InitParams, ptr, Kernel};
use super::CudaBackend;
use cudarc::driver::{CudaContext, CudaSlice};
use std::sync::Arc;

/// The device's context; a missing driver library is an error, not a panic.
pub(super) fn open_device(ordinal: usize) -> Result<Arc<CudaContext>> {
    // cudarc loads libcuda lazily and panics when it is absent: look for it first, so a
    // machine without a driver gets one clear line, not a panic message.
    if !driver_library_present() {
        return Err(CudaError::NoDriver);
    }
    let r = std::panic::catch_unwind(|| CudaContext::new(ordinal));
    match r {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(cause)) => Err(CudaError::Driver { what: format!("opening CUDA device {ordinal}"), cause }),
        Err(_) => Err(CudaError::NoDriver),
    }
}

/// How many CUDA devices the driver shows (0 without a driver).
pub fn device_count() -> usize {
    if !driver_library_present() {
        return 0;
    }
    std::panic::catch_unwind(CudaContext::device_count).ok().and_then(|r| r.ok()).map_or(0, |n| n.max(0) as usize)
}

/// Whether a CUDA device can be opened (tests skip when not).
pub fn device_available() -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = open_device(0).is_ok();
    std::panic::set_hook(hook);
    ok
}

impl CudaBackend {
    pub(super) fn p<T>(&self, s: &CudaSlice<T>) -> u64 {
        ptr(s, &self.k.stream)
    }

    pub(super) fn alloc_f32(&self, n: usize, what: &str) -> Result<CudaSlice<f32>> {
        let b = self.k.alloc::<f32>(n, what)?;
        if self.opts.poison {
            self.nan_fill(self.p(&b), 0, n)?;
        }
        Ok(b)
    }

    pub(super) fn alloc_bf16(&self, n: usize, what: &str) -> Result<CudaSlice<u16>> {
        let b = self.k.alloc::<u16>(n, what)?;
        if self.opts.poison {
            self.nan_fill(0, self.p(&b), n)?;
        }
        Ok(b)
    }

    pub(super) fn nan_fill(&self, f: u64, bf: u64, n: usize) -> Result<()> {
        let p = InitParams {
            out_bf16: bf,
            out_f32: f,
            n_lo: n as u32,
            n_hi: (n as u64 >> 32) as u32,
            mean: f32::NAN,
            std: 0.0,
            ..Default::default()
        };
        self.k.launch_grid_stride(Kernel::InitNormal, n, &p)
    }

    pub(super) fn upload<T: cudarc::driver::DeviceRepr>(&self, v: &[T], what: &str) -> Result<CudaSlice<T>> {
        self.k.upload(v, what)
    }

    pub(super) fn download<T: cudarc::driver::DeviceRepr>(&self, s: &CudaSlice<T>, what: &str) -> Result<Vec<T>> {
        self.waiting(|| self.k.stream.clone_dtoh(s))
            .map_err(CudaError::driver(|| format!("downloading {what} (a kernel before it may have failed)")))
    }

    /// `f`, a blocking download (it waits for the stream's work before it), its time counted as
    /// the host's wait on the device (Measure::take_device_wait).
    pub(super) fn waiting<R>(&self, f: impl FnOnce() -> R) -> R {
        let t = std::time::Instant::now();
        let r = f();
        self.device_wait.set(self.device_wait.get() + t.elapsed().as_secs_f64());
        r
    }
}
