//! Builds the CUDA kernels: every `csrc/*.cu` -> a fatbin (sm_90a + sm_80 machine code, and
//! compute_90 PTX for newer chips), embedded into the crate with `include_bytes!`.
//! Also runs bindgen over `csrc/params.h` (launch-parameter structs, tile constants, shared-
//! memory sizes) for the `#[repr(C)]` Rust mirror; bindgen's size/offset asserts check the Rust
//! side, and the same numbers, written out as `static_assert`s that nvcc compiles, check the C
//! side. And it scans every `extern "C" __global__` function of the `.cu` files into a typed
//! `Kernel` id (each variant knows its module and symbol).
//!
//! bindgen needs libclang, found through `LIBCLANG_PATH` or else in `.venv-cuda` (the `libclang`
//! wheel that tools/setup-cuda.sh installs). Both are only needed when the kernels are built.
//!
//! nvcc is looked up in `NVCC`, `CUDA_HOME/bin`, `PATH`, then `.venv-cuda` (tools/setup-cuda.sh).
//! Without it the crate builds CPU-only (one warning says why); `DLLM_REQUIRE_CUDA=1` makes a
//! missing nvcc or a kernel that fails to compile an error.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(dllm_cuda)");
    println!("cargo::rustc-check-cfg=cfg(dllm_nvtx)");
    println!("cargo::rerun-if-changed=csrc");
    println!("cargo::rerun-if-changed=build.rs");
    for v in ["NVCC", "CUDA_HOME", "DLLM_REQUIRE_CUDA", "PATH", "LIBCLANG_PATH"] {
        println!("cargo::rerun-if-env-changed={v}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let require = std::env::var("DLLM_REQUIRE_CUDA").map(|v| v == "1").unwrap_or(false);

    build_nvtx_shim(&root);
    write_row_top_k(&root, &out);
    // The commit benchmarks record (the device machine has no .git).
    println!("cargo::rerun-if-changed=.git/HEAD");
    println!("cargo::rerun-if-changed=.git/refs/heads");
    if let Ok(o) = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(&root).output() {
        if o.status.success() {
            println!("cargo::rustc-env=DLLM_COMMIT={}", String::from_utf8_lossy(&o.stdout).trim());
        }
    }

    let fail = |msg: String| {
        if require {
            panic!("DLLM_REQUIRE_CUDA=1: {msg}");
        }
        println!("cargo::warning=building dllm without CUDA kernels: {msg}");
    };
    let Some(nvcc) = find_nvcc(&root) else {
        return fail("nvcc not found (set NVCC or CUDA_HOME, or run tools/setup-cuda.sh)".into());
    };
    // The Rust mirror is used only with the kernels (cfg(dllm_cuda)): bindgen runs only here.
    if let Err(e) = point_clang_sys_at_libclang(&root) {
        return fail(e);
    }
    let mirror = match params_mirror(&root) {
        Ok(m) => m,
        Err(e) => return fail(format!("bindgen over csrc/params.h: {e}")),
    };
    std::fs::write(out.join("params.rs"), &mirror).unwrap();
    std::fs::write(out.join("params_check.cu"), c_layout_checks(&mirror)).unwrap();

    let mut sources: Vec<PathBuf> = std::fs::read_dir(root.join("csrc"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();
    let mut jobs: Vec<(String, PathBuf, bool)> =
        sources.iter().map(|s| (s.file_stem().unwrap().to_string_lossy().into_owned(), s.clone(), true)).collect();
    // The layout check compiles too (static_asserts), but is not embedded.
    jobs.push(("params_check".into(), out.join("params_check.cu"), false));

    let handles: Vec<_> = jobs
        .into_iter()
        .map(|(name, src, embed)| {
            let (nvcc, out, root) = (nvcc.clone(), out.clone(), root.clone());
            std::thread::spawn(move || {
                let text = std::fs::read_to_string(&src).unwrap_or_default();
                let mut cmd = Command::new(&nvcc);
                cmd.arg("--fatbin").arg("-O3").arg("-std=c++17").arg("-I").arg(root.join("csrc"));
                cmd.args(["-gencode", "arch=compute_90a,code=sm_90a", "-gencode", "arch=compute_90,code=compute_90"]);
                // sm_80 machine code only for files with no Hopper-only code (wgmma sits behind
                // __CUDA_ARCH_FEAT_SM90_ALL, with an mma.sync path beside it).
                if !text.contains("HOPPER_ONLY") && embed {
                    cmd.args(["-gencode", "arch=compute_80,code=sm_80"]);
                }
                let dst = out.join(format!("{name}.fatbin"));
                cmd.arg("-o").arg(&dst).arg(&src);
                let r = cmd.output();
                (
                    name,
                    embed,
                    r.map_err(|e| e.to_string()).and_then(|o| {
                        if o.status.success() {
                            Ok(())
                        } else {
                            Err(String::from_utf8_lossy(&o.stderr).into_owned())
                        }
                    }),
                )
            })
        })
        .collect();
    let mut modules = vec![];
    let mut errors = vec![];
    for h in handles {
        let (name, embed, r) = h.join().unwrap();
        match r {
            Ok(()) if embed => modules.push(name),
            Ok(()) => {}
            Err(e) => errors.push(format!("{name}.cu: {e}")),
        }
    }
    if !errors.is_empty() {
        return fail(format!("kernel compile failed with {}:\n{}", nvcc.display(), errors.join("\n")));
    }
    let kernels: Vec<(String, String)> = sources
        .iter()
        .flat_map(|src| {
            let module = src.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(src).unwrap();
            global_functions(&text).into_iter().map(move |k| (module.clone(), k))
        })
        .collect();
    std::fs::write(out.join("kernels_embed.rs"), kernels_rs(&modules, &kernels)).unwrap();
    println!("cargo::rustc-cfg=dllm_cuda");
}

/// `ROW_TOP_K` of csrc/params.h as a Rust expression (decode::row_top includes it), written
/// with or without the kernels: the CPU backend's row summaries keep as many entries as the
/// kernel's, from the one definition.
fn write_row_top_k(root: &Path, out: &Path) {
    let header = std::fs::read_to_string(root.join("csrc/params.h")).expect("reading csrc/params.h");
    let k = header
        .lines()
        .find_map(|l| l.trim().strip_prefix("#define ROW_TOP_K "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&k| k > 0)
        .expect("csrc/params.h must #define ROW_TOP_K as a positive integer");
    std::fs::write(out.join("row_top_k.rs"), format!("{k}\n")).unwrap();
}

/// NVTX3 is header-only: compile csrc/host/nvtx.c against its headers (from CUDA_HOME or the
/// nvidia-nvtx wheel in .venv-cuda) so src/nvtx.rs can push ranges. Optional: without the
/// headers the ranges compile to nothing.
fn build_nvtx_shim(root: &Path) {
    println!("cargo::rerun-if-env-changed=DLLM_NVTX_INCLUDE");
    let mut cands: Vec<PathBuf> = vec![];
    if let Some(p) = std::env::var_os("DLLM_NVTX_INCLUDE") {
        cands.push(PathBuf::from(p));
    }
    if let Some(h) = std::env::var_os("CUDA_HOME") {
        cands.push(PathBuf::from(h).join("include"));
    }
    if let Ok(rd) = std::fs::read_dir(root.join(".venv-cuda/lib")) {
        for py in rd.flatten() {
            cands.push(py.path().join("site-packages/nvidia/cu13/include"));
        }
    }
    let Some(inc) = cands.into_iter().find(|d| d.join("nvtx3/nvToolsExt.h").is_file()) else {
        println!("cargo::warning=NVTX headers not found (tools/setup-cuda.sh installs them): building without NVTX ranges");
        return;
    };
    cc::Build::new().file(root.join("csrc/host/nvtx.c")).include(inc).warnings(false).compile("dllm_nvtx");
    // NVTX3 loads the profiler's injection library with dlopen.
    println!("cargo::rustc-link-lib=dl");
    println!("cargo::rustc-cfg=dllm_nvtx");
}

fn find_nvcc(root: &Path) -> Option<PathBuf> {
    let works = |p: &Path| Command::new(p).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    let mut cands = vec![];
    if let Some(p) = std::env::var_os("NVCC") {
        cands.push(PathBuf::from(p));
    }
    if let Some(h) = std::env::var_os("CUDA_HOME") {
        cands.push(PathBuf::from(h).join("bin/nvcc"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        cands.extend(std::env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    if let Ok(rd) = std::fs::read_dir(root.join(".venv-cuda/lib")) {
        for py in rd.flatten() {
            cands.push(py.path().join("site-packages/nvidia/cu13/bin/nvcc"));
        }
    }
    cands.into_iter().find(|p| p.is_file() && works(p))
}

/// clang-sys (bindgen's libclang loader) reads `LIBCLANG_PATH` at run time; when it is unset,
/// point it at the `libclang` wheel in .venv-cuda.
fn point_clang_sys_at_libclang(root: &Path) -> Result<(), String> {
    if std::env::var_os("LIBCLANG_PATH").is_some() {
        return Ok(());
    }
    let found = std::fs::read_dir(root.join(".venv-cuda/lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|py| py.path().join("site-packages/clang/native"))
        .find(|d| d.join("libclang.so").is_file());
    match found {
        Some(dir) => {
            std::env::set_var("LIBCLANG_PATH", dir);
            Ok(())
        }
        None => Err("libclang not found (set LIBCLANG_PATH, or run tools/setup-cuda.sh)".into()),
    }
}

/// The Rust mirror of csrc/params.h: its structs, `#define` integers (as usize) and `constexpr`
/// values (evaluated by clang), with bindgen's size/offset asserts.
fn params_mirror(root: &Path) -> Result<String, String> {
    #[derive(Debug)]
    struct UsizeMacros;
    impl bindgen::callbacks::ParseCallbacks for UsizeMacros {
        fn int_macro(&self, _name: &str, _value: i64) -> Option<bindgen::callbacks::IntKind> {
            Some(bindgen::callbacks::IntKind::Custom { name: "usize", is_signed: false })
        }
    }
    let header = root.join("csrc/params.h");
    let b = bindgen::Builder::default()
        .header(header.to_string_lossy())
        // DLLM_BINDGEN: device pointers as uint64_t and no CUDA headers (see params.h).
        .clang_args(["-x", "c++", "-std=c++17", "-DDLLM_BINDGEN"])
        .allowlist_file(".*params\\.h")
        .blocklist_type("AttSmem")
        .ignore_functions()
        .derive_default(true)
        .parse_callbacks(Box::new(UsizeMacros))
        .raw_line("// Generated by build.rs from csrc/params.h with bindgen. Do not edit.")
        .generate()
        .map_err(|e| e.to_string())?;
    Ok(b.to_string())
}

/// The C side of the layout check: bindgen's sizes and offsets (read back from its asserts) as
/// `static_assert`s over the structs that nvcc compiles.
fn c_layout_checks(mirror: &str) -> String {
    let mut c = String::from(
        "// Generated by build.rs from bindgen's layout of csrc/params.h: nvcc must agree.\n#include <stddef.h>\n#include \"params.h\"\n",
    );
    let number = |line: &str| line.rsplit_once("- ").and_then(|(_, n)| n.split("usize").next()).map(str::to_string);
    let mut checks = 0;
    for line in mirror.lines() {
        if let Some(rest) = line.trim().strip_prefix("[\"Size of ") {
            let name = rest.split('"').next().unwrap();
            let n = number(line).expect("bindgen size assert");
            c += &format!("static_assert(sizeof({name}) == {n}, \"{name} size\");\n");
            checks += 1;
        } else if let Some(rest) = line.trim().strip_prefix("[\"Offset of field: ") {
            let path = rest.split('"').next().unwrap();
            let (name, field) = path.split_once("::").unwrap();
            let n = number(line).expect("bindgen offset assert");
            c += &format!("static_assert(offsetof({name}, {field}) == {n}, \"{path}\");\n");
            checks += 1;
        }
    }
    assert!(checks > 0, "bindgen emitted no layout asserts to check on the C side");
    c
}

/// The names of the `extern "C" __global__` functions of a .cu file.
fn global_functions(src: &str) -> Vec<String> {
    let mut names = vec![];
    for (i, _) in src.match_indices("extern \"C\" __global__ void") {
        let mut rest = src[i + "extern \"C\" __global__ void".len()..].trim_start();
        // Attributes between `void` and the name: __cluster_dims__(...), __launch_bounds__(...),
        // __maxnreg__(...).
        while let Some(r) = ["__cluster_dims__(", "__launch_bounds__(", "__maxnreg__("].iter().find_map(|a| rest.strip_prefix(a)) {
            let close = r.find(')').expect("an attribute's closing parenthesis");
            rest = r[close + 1..].trim_start();
        }
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        assert!(!name.is_empty(), "cannot read a kernel name in: {}", &src[i..(i + 120).min(src.len())]);
        names.push(name);
    }
    names
}

/// `MODULES` (module, fatbin) and the typed `Kernel` id over every module's kernels.
fn kernels_rs(modules: &[String], kernels: &[(String, String)]) -> String {
    let camel = |s: &str| -> String { s.split('_').map(|w| w[..1].to_ascii_uppercase() + &w[1..]).collect() };
    let mut rs = String::from("// Generated by build.rs from csrc/*.cu. Do not edit.\n\n");
    rs += "/// (module name, fatbin) for every csrc/*.cu.\npub const MODULES: &[(&str, &[u8])] = &[\n";
    for m in modules {
        rs += &format!("    ({m:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{m}.fatbin\"))),\n");
    }
    rs += "];\n\n/// Every `extern \"C\" __global__` kernel of csrc/.\n#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]\npub enum Kernel {\n";
    for (m, k) in kernels {
        rs += &format!("    /// `{k}` in csrc/{m}.cu\n    {},\n", camel(k));
    }
    rs += "}\n\nimpl Kernel {\n    pub const ALL: &[Kernel] = &[\n";
    for (_, k) in kernels {
        rs += &format!("        Kernel::{},\n", camel(k));
    }
    rs += "    ];\n\n    /// The csrc module (file stem) it is compiled in.\n    pub fn module(self) -> &'static str {\n        match self {\n";
    for (m, k) in kernels {
        rs += &format!("            Kernel::{} => {m:?},\n", camel(k));
    }
    rs += "        }\n    }\n\n    /// Its symbol in the module.\n    pub fn symbol(self) -> &'static str {\n        match self {\n";
    for (_, k) in kernels {
        rs += &format!("            Kernel::{} => {k:?},\n", camel(k));
    }
    rs += "        }\n    }\n}\n\nimpl std::fmt::Display for Kernel {\n    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {\n        f.write_str(self.symbol())\n    }\n}\n";
    rs
}
