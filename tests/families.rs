//! The LLaDA2 releases (`make-model --family`): each writes its config.json layout, the engine
//! tells them apart and decodes each with its own algorithm unless told otherwise.

use dllm::config::{Family, ModelConfig};
use dllm::make_model::Plan;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("dllm-fam-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn write(family: Family, tag: &str) -> PathBuf {
    let dir = tmp(tag);
    Plan::for_family("tiny", family, 0, None).unwrap().write(&dir).unwrap();
    dir
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn dllm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dllm"))
}

/// `dllm generate --json` on `dir` with `args`: the parsed JSON, or the error text.
fn generate(dir: &Path, args: &[&str]) -> Result<Value, String> {
    let out = dllm()
        .args(["generate", "--device", "cpu", "--json", "--max-new-tokens", "8", "--model-path"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn every_family_writes_the_keys_the_official_code_reads_with_other_defaults() {
    for (family, tag) in [(Family::Llada20, "k20"), (Family::Llada21, "k21"), (Family::Llada22, "k22")] {
        let dir = write(family, tag);
        let c = json(&dir.join("config.json"));
        // The official configuration class defaults these otherwise (use_bias true, dropouts
        // 0.1, pad 126081): without them the official code would load another model.
        for (key, want) in [
            ("use_bias", Value::Bool(false)),
            ("attention_dropout", 0.0.into()),
            ("embedding_dropout", 0.0.into()),
            ("output_dropout", 0.0.into()),
            ("norm_topk_prob", true.into()),
            ("moe_router_enable_expert_bias", true.into()),
            ("hidden_act", "silu".into()),
            ("rms_norm_eps", 1e-6.into()),
            ("pad_token_id", c["eos_token_id"].clone()),
        ] {
            assert_eq!(c[key], want, "{tag}: {key}");
        }
        let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        assert_eq!(cfg.family(), family, "{tag}: the family read back");
        let twenty_two = family == Family::Llada22;
        assert_eq!(c.get("n_group").is_some(), !twenty_two, "{tag}: n_group");
        assert_eq!(c.get("topk_group").is_some(), !twenty_two, "{tag}: topk_group");
        assert_eq!(c["max_position_embeddings"], if twenty_two { 131072 } else { 4096 }, "{tag}");
        if twenty_two {
            assert!(c.get("expert_capacity").is_some() && c["block_size"].is_u64(), "{tag}: block routing keys");
            // RoPE settings live in rope_parameters, and the parser finds theta there.
            assert!(c.get("rope_theta").is_none());
            assert_eq!(cfg.rope_theta as f64, c["rope_parameters"]["rope_theta"].as_f64().unwrap());
            // The edit tokens' ids are the tokenizer's.
            let vocab = &json(&dir.join("tokenizer.json"))["model"]["vocab"];
            let ids = [c["delete_token_id"].as_u64().unwrap(), c["split_token_id"].as_u64().unwrap()];
            assert_eq!(ids, [vocab["<|delete|>"].as_u64().unwrap(), vocab["<|split|>"].as_u64().unwrap()]);
            assert!(ids.iter().all(|&i| (i as usize) < cfg.vocab_size));
        } else {
            assert!(c.get("expert_capacity").is_none() && c.get("delete_token_id").is_none(), "{tag}: no 2.2 keys");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn the_family_names_are_decode_s() {
    use dllm::decode::{joint_threshold, joint_threshold_indel, low_confidence};
    assert_eq!(Family::Llada20.default_algorithm(), low_confidence::NAME);
    assert_eq!(Family::Llada21.default_algorithm(), joint_threshold::NAME);
    assert_eq!(Family::Llada22.default_algorithm(), joint_threshold_indel::NAME);
}

#[test]
fn each_family_decodes_with_its_algorithm() {
    let d20 = write(Family::Llada20, "a20");
    let d21 = write(Family::Llada21, "a21");
    let d22 = write(Family::Llada22, "a22");
    assert_eq!(generate(&d20, &[]).unwrap()["dllm_algorithm"], "LowConfidence");
    assert_eq!(generate(&d21, &[]).unwrap()["dllm_algorithm"], "JointThreshold");
    // The flag wins over the family's default, either way.
    assert_eq!(generate(&d21, &["--dllm-algorithm", "LowConfidence"]).unwrap()["dllm_algorithm"], "LowConfidence");
    let jt = generate(
        &d20,
        &["--dllm-algorithm", "jointthreshold", "--threshold", "0.7", "--edit-threshold", "0.5", "--max-post-edit-steps", "2"],
    )
    .unwrap();
    assert_eq!(jt["dllm_algorithm"], "JointThreshold");
    // 2.0 and 2.1 of a seed have the same weights: the same algorithm gives the same output.
    assert_eq!(
        generate(&d21, &["--threshold", "0.7", "--edit-threshold", "0.5", "--max-post-edit-steps", "2"]).unwrap()["output_ids"],
        jt["output_ids"]
    );
    // 2.2 loads (block routing) and decodes with its own decoder by default, the others by the
    // flag, in blocks of its routing block only.
    let indel = generate(&d22, &[]).unwrap();
    assert_eq!(indel["dllm_algorithm"], "JointThresholdInDel", "{indel}");
    assert_eq!(indel["output_ids"].as_array().unwrap().len(), 8, "{indel}");
    for alg in ["LowConfidence", "JointThreshold"] {
        let out = generate(&d22, &["--dllm-algorithm", alg]).unwrap();
        assert_eq!(out["output_ids"].as_array().unwrap().len(), 8, "{alg}: {out}");
    }
    let e = generate(&d22, &["--dllm-algorithm", "LowConfidence", "--block-size", "8"]).unwrap_err();
    assert!(e.contains("routes its experts per block of 32") && e.contains("must be 32, got 8"), "{e}");
    for (args, want) in [
        // A 2.1 checkpoint has no delete / split tokens.
        (&["--dllm-algorithm", "JointThresholdInDel"][..], "JointThresholdInDel needs the checkpoint's delete_token_id and split_token_id"),
        (&["--dllm-algorithm", "Bogus"][..], "unknown diffusion algorithm"),
        (
            &["--dllm-algorithm", "LowConfidence", "--edit-threshold", "0.5"][..],
            "edit_threshold applies to JointThreshold and JointThresholdInDel only",
        ),
        (&["--edit-threshold", "1.5"][..], "edit_threshold must be in [0, 1]"),
        (&["--max-post-edit-steps", "100000"][..], "max_post_edit_steps must be at most"),
        (&["--steps", "4"][..], "steps applies to LowConfidence"),
    ] {
        let e = generate(&d21, args).unwrap_err();
        assert!(e.contains(want), "{args:?}: {e}");
    }
    for d in [d20, d21, d22] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// A block-routed (2.2) checkpoint is served in its routing block only: another
/// `--diffusion-block-size` is a startup error naming both; its own starts.
#[test]
fn serving_2_2_needs_its_routing_block() {
    let dir = write(Family::Llada22, "serve22");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let start = |block: &str| {
        let args = [
            "serve",
            "--model-path",
            dir.to_str().unwrap(),
            "--device",
            "cpu",
            "--port",
            "0",
            "--log-level",
            "error",
            "--dllm-algorithm",
            "LowConfidence",
            "--diffusion-block-size",
            block,
        ];
        rt.block_on(dllm::server::start(dllm::server::ServeArgs::parse_from(args).unwrap()))
    };
    let e = format!("{:#}", start("8").err().expect("block 8 must be refused"));
    assert!(e.contains("--diffusion-block-size 8") && e.contains("per block of 32"), "{e}");
    let srv = start("32").expect("the routing block serves");
    rt.block_on(srv.shutdown());
    std::fs::remove_dir_all(&dir).unwrap();
}
