//! `dllm make-model`: the size it announces is the size it writes, it checks the free space
//! first, and a failed run leaves no half-written checkpoint behind.

use dllm::make_model::{check_free_space, human_bytes, make_model, Plan};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("dllm-mm-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// Everything under `dir` (file names and bytes).
fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len())
        })
        .collect();
    v.sort();
    v
}

/// Entries of `parent` whose name starts with `.{name}`: the hidden partial directories.
fn leftovers(parent: &Path, name: &str) -> Vec<String> {
    let prefix = format!(".{name}");
    std::fs::read_dir(parent).unwrap().filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(&prefix)).collect()
}

#[test]
fn the_estimate_is_the_bytes_written() {
    let dir = tmp("estimate");
    let plan = Plan::new("tiny", 0).unwrap();
    plan.write(&dir).unwrap();
    let written: u64 = files(&dir).iter().map(|(_, n)| n).sum();
    assert_eq!(plan.total_bytes(), written, "{:?}", files(&dir));
    dllm::checkpoint::Checkpoint::open(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_existing_directory_is_refused_and_left_as_it_was() {
    let dir = tmp("exists");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let err = make_model("tiny", &dir, 0).expect_err("writing into a non-empty directory must fail");
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    assert_eq!(files(&dir), vec![("notes.txt".to_string(), 4)]);
    assert!(leftovers(dir.parent().unwrap(), &dir.file_name().unwrap().to_string_lossy()).is_empty());
    // An empty directory (e.g. made by the caller) is filled.
    std::fs::remove_file(dir.join("notes.txt")).unwrap();
    make_model("tiny", &dir, 0).unwrap();
    assert!(dir.join("config.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn free_space_is_checked_before_writing() {
    let e = check_free_space(31_900_000_000, 2_500_000_000, Path::new("/data")).unwrap_err().to_string();
    assert_eq!(e, "the checkpoint needs 31.9 GB, 2.5 GB free on /data");
    check_free_space(3_000_000, 3_000_000, Path::new("/data")).unwrap();
    assert_eq!(human_bytes(2_912_345), "2.9 MB");
}

fn dllm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dllm"))
}

#[test]
fn the_cli_announces_the_size_and_draws_no_bar_off_a_terminal() {
    let dir = tmp("cli");
    let out = dllm().args(["make-model", "--preset", "tiny", "--out"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let size = human_bytes(Plan::new("tiny", 0).unwrap().total_bytes());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "only the estimate and the summary, no progress bar: {stderr:?}");
    assert_eq!(lines[0], format!("writing {size} to {}", dir.display()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A write that fails half way (here: the file-size limit, as a full disk would) leaves neither
/// the checkpoint directory nor its hidden partial sibling. Before, the shards written so far
/// stayed in --out.
#[test]
fn a_write_that_fails_half_way_leaves_nothing() {
    let dir = tmp("fails");
    // 64 KiB per file: the first shard cannot be written whole. SIGXFSZ ignored, so the write
    // returns EFBIG as an error instead of killing the process.
    let script = format!("trap '' XFSZ; ulimit -f 64; exec \"$0\" make-model --preset tiny --out '{}'", dir.display());
    let out = Command::new("bash").arg("-c").arg(script).arg(env!("CARGO_BIN_EXE_dllm")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("error: writing") && stderr.contains("model-00001-of-"), "{stderr}");
    assert!(!dir.exists(), "{} was left behind", dir.display());
    assert!(leftovers(dir.parent().unwrap(), &dir.file_name().unwrap().to_string_lossy()).is_empty());
}

#[test]
fn partial_directories_of_killed_writers_are_removed() {
    let parent = tmp("stale");
    std::fs::create_dir_all(&parent).unwrap();
    // Above Linux's largest pid (2^22): no process has it.
    let stale = parent.join(".ckpt.partial-999999999");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("model-00001-of-00001.safetensors"), b"half").unwrap();
    // Another checkpoint's are left alone.
    let other = parent.join(".other.partial-999999999");
    std::fs::create_dir_all(&other).unwrap();
    make_model("tiny", &parent.join("ckpt"), 0).unwrap();
    assert!(!stale.exists(), "the killed writer's partial directory is still there");
    assert!(other.exists());
    assert!(parent.join("ckpt/config.json").exists());
    std::fs::remove_dir_all(&parent).unwrap();
}

/// `--config-only`: flash's config and tokenizer in a few MB, no weights; the directory a
/// `--load-format dummy` server draws random GPU weights for. Without a GPU that is a clear error.
#[test]
fn config_only_writes_a_model_directory_for_dummy_weights() {
    let out = tmp("config-only");
    let st = Command::new(env!("CARGO_BIN_EXE_dllm"))
        .args(["make-model", "--preset", "flash", "--config-only", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let names: Vec<String> = files(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]);
    let cfg = dllm::config::ModelConfig::from_file(&out.join("config.json")).unwrap();
    assert_eq!((cfg.hidden_size, cfg.num_hidden_layers, cfg.moe_intermediate_size), (4096, 32, 1024));
    let err = format!("{:#}", dllm::checkpoint::Checkpoint::open(&out).err().expect("no weights to open"));
    assert!(err.contains("safetensors"), "{err}");
    let g = Command::new(env!("CARGO_BIN_EXE_dllm"))
        .args(["generate", "--model-path", out.to_str().unwrap(), "--load-format", "dummy", "--device", "cpu"])
        .output()
        .unwrap();
    assert!(!g.status.success());
    let e = String::from_utf8_lossy(&g.stderr);
    assert!(e.contains("--load-format dummy draws random weights on the GPU"), "{e}");
    let _ = std::fs::remove_dir_all(&out);
}
