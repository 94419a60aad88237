// Placeholder until the CUDA build lands: declares the cfg the CUDA backend hides behind.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(dllm_cuda)");
}
