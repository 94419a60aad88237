//! The CUDA layer's errors. Each names what it was doing (the kernel, the buffer, the cuBLAS
//! call); the backend's `Backend` methods turn them into `anyhow::Error` with `?`.
//! A message carries its cause (`{cause}`), so none is also chained as a `source`: printed with
//! its chain, an error would say the cause twice.

use super::kernels::Kernel;
use cudarc::cublas::result::CublasError;
use cudarc::driver::sys::cudaError_enum;
use cudarc::driver::DriverError;

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver found (libcuda.so.1 could not be loaded)")]
    NoDriver,
    #[error("{lib} could not be loaded; put its folder on LD_LIBRARY_PATH")]
    MissingLibrary { lib: &'static str },
    #[error("loading CUDA module {module}.cu (does the driver support this GPU?): {cause}")]
    ModuleLoad { module: &'static str, cause: DriverError },
    #[error("launching kernel {kernel}: {cause}")]
    Launch { kernel: Kernel, cause: DriverError },
    /// A fault found when the stream was synchronised after the launch (`DLLM_CUDA_SYNC=1`).
    #[error("kernel {kernel} failed: {cause}")]
    KernelFailed { kernel: String, cause: DriverError },
    #[error("cuBLAS {what}: {cause}")]
    Cublas { what: String, cause: CublasError },
    #[error("out of GPU memory allocating {what} ({bytes} bytes)")]
    OutOfMemory { what: String, bytes: usize },
    /// NCCL missing, or a collective that failed (the message says which).
    #[error("{0}")]
    Nccl(String),
    /// Any other driver call; `what` says which and on what.
    #[error("{what}: {cause}")]
    Driver { what: String, cause: DriverError },
}

pub type Result<T> = std::result::Result<T, CudaError>;

impl CudaError {
    /// A driver error of the call `what` (a closure so the message is built only on failure).
    pub fn driver(what: impl FnOnce() -> String) -> impl FnOnce(DriverError) -> CudaError {
        move |cause| CudaError::Driver { what: what(), cause }
    }

    /// An allocation's failure: out of memory, or another driver error.
    pub fn alloc(what: &str, bytes: usize, cause: DriverError) -> CudaError {
        Self::allocating(what, bytes, cause, || format!("allocating {what} ({bytes} bytes) on the GPU"))
    }

    /// A failed upload (it allocates the device copy): out of memory, or another driver error.
    pub fn upload(what: &str, bytes: usize, cause: DriverError) -> CudaError {
        Self::allocating(what, bytes, cause, || format!("uploading {what}"))
    }

    fn allocating(what: &str, bytes: usize, cause: DriverError, doing: impl FnOnce() -> String) -> CudaError {
        if cause.0 == cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
            CudaError::OutOfMemory { what: what.to_string(), bytes }
        } else {
            CudaError::Driver { what: doing(), cause }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_names_the_buffer_and_other_failures_keep_the_driver_error() {
        let oom = CudaError::alloc("the KV cache", 1 << 30, DriverError(cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY));
        assert!(matches!(&oom, CudaError::OutOfMemory { what, bytes } if what == "the KV cache" && *bytes == 1 << 30));
        assert_eq!(oom.to_string(), "out of GPU memory allocating the KV cache (1073741824 bytes)");
        let other = CudaError::upload("token ids", 8, DriverError(cudaError_enum::CUDA_ERROR_INVALID_VALUE));
        // (Not formatted: DriverError's Debug asks the driver for the text, and CI has none.)
        assert!(
            matches!(&other, CudaError::Driver { what, cause } if what == "uploading token ids" && cause.0 == cudaError_enum::CUDA_ERROR_INVALID_VALUE)
        );
    }
}
