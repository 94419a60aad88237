//! The CUDA layer's errors. Each names what it was doing (the kernel, the buffer, the cuBLAS
//! call); the backend's `Backend` methods turn them into `anyhow::Error` with `?`.

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
    #[error("loading CUDA module {module}.cu (does the driver support this GPU?): {source}")]
    ModuleLoad { module: &'static str, source: DriverError },
    #[error("launching kernel {kernel}: {source}")]
    Launch { kernel: Kernel, source: DriverError },
    /// A fault found when the stream was synchronised after the launch (`DLLM_CUDA_SYNC=1`).
    #[error("kernel {kernel} failed: {source}")]
    KernelFailed { kernel: String, source: DriverError },
    #[error("cuBLAS {what}: {source}")]
    Cublas { what: String, source: CublasError },
    #[error("out of GPU memory allocating {what} ({bytes} bytes)")]
    OutOfMemory { what: String, bytes: usize },
    /// Any other driver call; `what` says which and on what.
    #[error("{what}: {source}")]
    Driver { what: String, source: DriverError },
}

pub type Result<T> = std::result::Result<T, CudaError>;

impl CudaError {
    /// A driver error of the call `what` (a closure so the message is built only on failure).
    pub fn driver(what: impl FnOnce() -> String) -> impl FnOnce(DriverError) -> CudaError {
        move |source| CudaError::Driver { what: what(), source }
    }

    /// An allocation's failure: out of memory, or another driver error.
    pub fn alloc(what: &str, bytes: usize, source: DriverError) -> CudaError {
        Self::allocating(what, bytes, source, || format!("allocating {what} ({bytes} bytes) on the GPU"))
    }

    /// A failed upload (it allocates the device copy): out of memory, or another driver error.
    pub fn upload(what: &str, bytes: usize, source: DriverError) -> CudaError {
        Self::allocating(what, bytes, source, || format!("uploading {what}"))
    }

    fn allocating(what: &str, bytes: usize, source: DriverError, doing: impl FnOnce() -> String) -> CudaError {
        if source.0 == cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
            CudaError::OutOfMemory { what: what.to_string(), bytes }
        } else {
            CudaError::Driver { what: doing(), source }
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
            matches!(&other, CudaError::Driver { what, source } if what == "uploading token ids" && source.0 == cudaError_enum::CUDA_ERROR_INVALID_VALUE)
        );
    }
}
