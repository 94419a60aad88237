//! Builds the CUDA kernels: every `csrc/*.cu` -> a fatbin (sm_90a + sm_80 machine code, and
//! compute_90 PTX for newer chips), embedded into the crate with `include_bytes!`.
//! Also turns `csrc/params.h` (the launch-parameter structs) into their `#[repr(C)]` Rust mirror,
//! with size/offset asserts emitted on both sides from one layout computation.
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
    for v in ["NVCC", "CUDA_HOME", "DLLM_REQUIRE_CUDA", "PATH"] {
        println!("cargo::rerun-if-env-changed={v}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let require = std::env::var("DLLM_REQUIRE_CUDA").map(|v| v == "1").unwrap_or(false);

    let header = std::fs::read_to_string(root.join("csrc/params.h")).expect("reading csrc/params.h");
    let structs = parse_params(&header);
    std::fs::write(out.join("params.rs"), rust_mirror(&structs)).unwrap();
    std::fs::write(out.join("params_check.cu"), c_checks(&structs)).unwrap();

    build_nvtx_shim(&root);
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
                // sm_80 machine code only for files with no Hopper-only code.
                if !text.contains("wgmma") && !text.contains("HOPPER_ONLY") && embed {
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
    let mut rs = String::from("/// (module name, fatbin) for every csrc/*.cu.\npub const MODULES: &[(&str, &[u8])] = &[\n");
    for m in &modules {
        rs += &format!("    ({m:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{m}.fatbin\"))),\n");
    }
    rs += "];\n";
    std::fs::write(out.join("kernels_embed.rs"), rs).unwrap();
    println!("cargo::rustc-cfg=dllm_cuda");
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

struct Field {
    name: String,
    /// Rust type and size (= alignment) in bytes.
    rty: &'static str,
    size: usize,
}

struct Struct {
    name: String,
    fields: Vec<Field>,
}

/// The subset of C that params.h is written in: `struct Name {` / `type name;` / `};`.
fn parse_params(src: &str) -> Vec<Struct> {
    let mut out = vec![];
    let mut cur: Option<Struct> = None;
    for line in src.lines() {
        let line = line.split("//").next().unwrap().trim();
        if let Some(rest) = line.strip_prefix("struct ") {
            let name = rest.trim_end_matches('{').trim().to_string();
            cur = Some(Struct { name, fields: vec![] });
        } else if line.starts_with("};") {
            out.push(cur.take().expect("params.h: `};` outside a struct"));
        } else if let Some(s) = cur.as_mut() {
            if line.is_empty() {
                continue;
            }
            let decl = line.strip_suffix(';').unwrap_or_else(|| panic!("params.h: cannot parse {line:?}"));
            let (ty, name) = decl.rsplit_once([' ', '*']).unwrap();
            let name = name.trim().to_string();
            let (rty, size) = if decl.contains('*') {
                ("u64", 8)
            } else {
                match ty.trim() {
                    "int32_t" | "int" => ("i32", 4),
                    "uint32_t" => ("u32", 4),
                    "float" => ("f32", 4),
                    other => panic!("params.h: unsupported field type {other:?} in {}", s.name),
                }
            };
            s.fields.push(Field { name, rty, size });
        }
    }
    out
}

/// C layout of the fields: natural alignment, size rounded to the largest alignment.
fn layout(s: &Struct) -> (Vec<usize>, usize) {
    let mut off: usize = 0;
    let mut offs = vec![];
    let mut align = 1;
    for f in &s.fields {
        off = off.div_ceil(f.size) * f.size;
        offs.push(off);
        off += f.size;
        align = align.max(f.size);
    }
    (offs, off.div_ceil(align) * align)
}

fn rust_mirror(structs: &[Struct]) -> String {
    let mut r = String::from("// Generated by build.rs from csrc/params.h. Do not edit.\n");
    for s in structs {
        let (offs, size) = layout(s);
        r += &format!("#[repr(C)]\n#[derive(Clone, Copy, Debug, Default)]\npub struct {} {{\n", s.name);
        for f in &s.fields {
            r += &format!("    pub {}: {},\n", f.name, f.rty);
        }
        r += "}\n";
        r += &format!("const _: () = assert!(std::mem::size_of::<{}>() == {size});\n", s.name);
        for (f, o) in s.fields.iter().zip(offs) {
            r += &format!("const _: () = assert!(std::mem::offset_of!({}, {}) == {o});\n", s.name, f.name);
        }
    }
    r
}

fn c_checks(structs: &[Struct]) -> String {
    let mut c =
        String::from("// Generated by build.rs: the C side of the params.h layout check.\n#include <stddef.h>\n#include \"params.h\"\n");
    for s in structs {
        let (offs, size) = layout(s);
        c += &format!("static_assert(sizeof({}) == {size}, \"{} size\");\n", s.name, s.name);
        for (f, o) in s.fields.iter().zip(offs) {
            c += &format!("static_assert(offsetof({}, {}) == {o}, \"{}.{}\");\n", s.name, f.name, s.name, f.name);
        }
    }
    c
}
