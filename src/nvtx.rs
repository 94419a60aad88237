//! NVTX ranges (domain "dllm") for nsys / `ncu --nvtx` timelines. Ranges are pushed only when
//! a tool has injected itself (it sets `NVTX_INJECTION64_PATH`); otherwise a range costs one
//! branch and no formatting.

use std::fmt::Arguments;

pub struct Range {
    active: bool,
}

impl Drop for Range {
    fn drop(&mut self) {
        if self.active {
            imp::pop();
        }
    }
}

pub fn range(name: &str) -> Range {
    if !imp::enabled() {
        return Range { active: false };
    }
    imp::push(name);
    Range { active: true }
}

pub fn range_fmt(args: Arguments<'_>) -> Range {
    if !imp::enabled() {
        return Range { active: false };
    }
    range(&args.to_string())
}

/// Whether ranges are recorded (an NVTX tool is attached and the shim was built).
pub fn enabled() -> bool {
    imp::enabled()
}

#[cfg(dllm_nvtx)]
mod imp {
    use std::ffi::{c_char, CString};
    use std::sync::OnceLock;

    extern "C" {
        fn dllm_nvtx_push(name: *const c_char) -> i32;
        fn dllm_nvtx_pop() -> i32;
    }

    pub fn enabled() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| std::env::var_os("NVTX_INJECTION64_PATH").is_some())
    }

    pub fn push(name: &str) {
        let c = CString::new(name.replace('\0', " ")).unwrap_or_default();
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call; NVTX copies it.
        unsafe { dllm_nvtx_push(c.as_ptr()) };
    }

    pub fn pop() {
        // SAFETY: called only from Range::drop, paired with a successful push on this thread.
        unsafe { dllm_nvtx_pop() };
    }
}

#[cfg(not(dllm_nvtx))]
mod imp {
    pub fn enabled() -> bool {
        false
    }
    pub fn push(_name: &str) {}
    pub fn pop() {}
}
