//! The house's layers (docs/ARCHITECTURE.md), checked on the source: which top-level module
//! may name which. An arrow only points down; a new import that points up fails here, with the
//! file and the line, before it grows into a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules of the library, each with the modules it may import (besides itself).
/// `main` is the binary. Anything not listed here is a new module: add it with its rules.
const MAY_IMPORT: &[(&str, &[&str])] = &[
    // Weights and the bottom of the house: device-free, no dependency on what runs them.
    ("lib", &[]), // declares the modules, names none
    ("rng", &[]),
    ("nvtx", &[]),
    ("progress", &[]),
    // Block-FP8 encoding and the quantization config: pure arithmetic, under the config.
    ("fp8", &[]),
    ("config", &["fp8"]),
    ("checkpoint", &["config", "fp8"]),
    ("tokenizer", &["config"]),
    // Pure decoding rules: the backends' CPU twins, the engine and the benchmarks share them.
    ("decode", &["rng"]),
    ("backend", &["config", "checkpoint", "decode", "fp8", "nvtx", "progress", "rng"]),
    ("model", &["backend", "config", "decode", "nvtx"]),
    ("engine", &["backend", "config", "decode", "model", "nvtx", "rng"]),
    ("runtime", &["backend", "checkpoint", "config", "engine", "fp8", "tokenizer"]),
    ("server", &["backend", "checkpoint", "config", "decode", "engine", "fp8", "rng", "runtime", "tokenizer"]),
    // Callers at the top: they may use the checkpoint writer.
    ("make_model", &["checkpoint", "config", "fp8", "progress", "rng", "tokenizer"]),
    ("bench", &["backend", "checkpoint", "config", "decode", "engine", "fp8", "make_model", "nvtx", "rng", "runtime", "tokenizer"]),
    ("main", &["bench", "config", "decode", "engine", "fp8", "make_model", "runtime", "server", "tokenizer"]),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to: `src/backend/cuda/mod.rs` -> `backend`.
fn owner(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a line names through `crate::` (the library) or `dllm::` (the binary),
/// including grouped imports such as `use crate::{a::X, b}`.
fn named_modules(line: &str, root: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = vec![];
    let prefix = format!("{root}::");
    let mut rest = code;
    while let Some(i) = rest.find(&prefix) {
        // `dllm::` inside a longer identifier (e.g. `my_dllm::`) is not the crate.
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != "self" {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

#[test]
fn every_import_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rules: BTreeMap<&str, BTreeSet<&str>> = MAY_IMPORT.iter().map(|(m, deps)| (*m, deps.iter().copied().collect())).collect();
    let mut files = vec![];
    sources(&src, &mut files);
    files.sort();
    let mut bad = vec![];
    let mut seen_modules = BTreeSet::new();
    for f in &files {
        let module = owner(&src, f);
        seen_modules.insert(module.clone());
        let Some(allowed) = rules.get(module.as_str()) else {
            bad.push(format!("{}: module `{module}` has no rules in tests/layers.rs", f.display()));
            continue;
        };
        let root = if module == "main" { "dllm" } else { "crate" };
        for (n, line) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
            for dep in named_modules(line, root) {
                if dep != module && !allowed.contains(dep.as_str()) {
                    bad.push(format!("{}:{}: `{module}` must not import `{dep}`: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(bad.is_empty(), "imports that point up:\n{}", bad.join("\n"));
    // The rules themselves: every listed module exists, and together they form no cycle.
    for m in rules.keys() {
        assert!(seen_modules.contains(*m), "tests/layers.rs lists `{m}`, which src/ no longer has");
    }
    let mut done: BTreeSet<&str> = BTreeSet::new();
    while done.len() < rules.len() {
        let ready: Vec<&str> =
            rules.iter().filter(|(m, deps)| !done.contains(*m) && deps.iter().all(|d| done.contains(d))).map(|(m, _)| *m).collect();
        assert!(
            !ready.is_empty(),
            "the layer rules have a cycle among {:?}",
            rules.keys().filter(|m| !done.contains(*m)).collect::<Vec<_>>()
        );
        done.extend(ready);
    }
}

#[test]
fn the_checker_sees_imports() {
    assert_eq!(named_modules("use crate::backend::{Backend, StepBatch};", "crate"), vec!["backend"]);
    assert_eq!(named_modules("use crate::{config::X, rng};  // crate::server", "crate"), vec!["config", "rng"]);
    assert_eq!(named_modules("let x = crate::nvtx::range(\"a\"); dllm::server::run()", "dllm"), vec!["server"]);
    assert_eq!(named_modules("let y = my_dllm::server;", "dllm"), Vec::<String>::new());
}
