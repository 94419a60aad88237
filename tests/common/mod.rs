//! Reading the PyTorch oracle's fixtures (tests/fixtures), shared by the CPU and CUDA tests.
#![allow(dead_code)]

use dllm::backend::{Backend, StepBatch};
use dllm::config::ModelConfig;
use dllm::decode::Policy;
use dllm::engine::GenParams;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub fn fixture(name: &str) -> Option<Value> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&p).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Make the checkpoint the fixtures came from in `dir` (the header's family, 2.0 without one),
/// checked byte for byte against them.
pub fn make_fixture_model(fx: &Value, dir: &Path) {
    let m = &fx["model"];
    let family = match m["family"].as_str() {
        None => dllm::config::Family::Llada20,
        Some(name) => <dllm::config::Family as clap::ValueEnum>::from_str(name, false).unwrap(),
    };
    let plan = dllm::make_model::Plan::for_family(m["preset"].as_str().unwrap(), family, m["seed"].as_u64().unwrap(), None).unwrap();
    plan.write(dir).unwrap();
    for (file, want) in m["sha256"].as_object().unwrap() {
        let got = format!("{:x}", Sha256::digest(std::fs::read(dir.join(file)).unwrap()));
        assert_eq!(&got, want.as_str().unwrap(), "{file} differs from the checkpoint the fixtures were made from");
    }
}

pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    assert!(got.iter().all(|x| x.is_finite()), "non-finite logits");
    let num: f64 = got.iter().zip(want).map(|(a, b)| (*a as f64 - b).powi(2)).sum::<f64>().sqrt();
    let den: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
    num / den.max(1e-30)
}

/// A logits fixture case's forward (its input_ids from position 0, its block_size) on `b`: the
/// case's positions and their logits rows, `vocab` floats each.
pub fn case_logits<B: Backend>(b: &mut B, cfg: &ModelConfig, case: &Value) -> (Vec<usize>, Vec<f32>) {
    let input = ids(&case["input_ids"]);
    let bs = case["block_size"].as_u64().unwrap() as usize;
    let positions: Vec<usize> = case["positions"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as usize).collect();
    let slot = b.alloc_seq(input.len()).unwrap();
    let mut batch = StepBatch::default();
    batch.push(slot, 0, &input, bs);
    let got = dllm::model::forward_logits(b, cfg, &batch, &positions).unwrap();
    b.free_seq(slot);
    (positions, got)
}

/// Every logits case through `b`: (case name, position, relative error vs the oracle).
pub fn logits_errors<B: Backend>(b: &mut B, cfg: &ModelConfig, fx: &Value) -> Vec<(String, usize, f64)> {
    let mut out = vec![];
    for case in fx["cases"].as_array().unwrap() {
        let (positions, got) = case_logits(b, cfg, case);
        let v = cfg.vocab_size;
        for (i, want) in case["logits"].as_array().unwrap().iter().enumerate() {
            let want: Vec<f64> = want.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            out.push((case["name"].as_str().unwrap().to_string(), positions[i], rel_err(&got[i * v..(i + 1) * v], &want)));
        }
    }
    out
}

/// The decoding parameters of a greedy case; its eos_id replaces the model's.
pub fn greedy_params(case: &Value) -> GenParams {
    GenParams {
        max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
        block_size: case["block_size"].as_u64().unwrap() as usize,
        steps: Some(case["steps"].as_u64().unwrap() as usize),
        policy: Policy::LowConfidence { threshold: case["threshold"].as_f64().unwrap() as f32 },
        stop_token_ids: vec![case["eos_id"].as_u64().unwrap() as u32],
        replace_eos: true,
        ..GenParams::default()
    }
}

/// The decoding parameters of a JointThreshold case; its eos_id replaces the model's.
pub fn joint_params(case: &Value) -> GenParams {
    GenParams {
        max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
        block_size: case["block_size"].as_u64().unwrap() as usize,
        steps: None,
        policy: Policy::JointThreshold(dllm::decode::joint_threshold::JointThreshold {
            threshold: case["threshold"].as_f64().unwrap() as f32,
            edit_threshold: case["edit_threshold"].as_f64().unwrap() as f32,
            max_post_edit_steps: case["max_post_edit_steps"].as_u64().unwrap() as usize,
        }),
        stop_token_ids: vec![case["eos_id"].as_u64().unwrap() as u32],
        replace_eos: true,
        ..GenParams::default()
    }
}

/// Every rule of JointThresholdInDel's step as reference.py's `indel_step` names them
/// (POLICY_BRANCHES there, written down again here so that shrinking that list fails the tests
/// that compare the two): the InDel fixture sets must hit each.
pub const INDEL_RULES: &[&str] = &[
    "m2t_threshold",
    "m2t_top",
    "m2t_new_masks_all",
    "m2t_final_all",
    "quota_raised",
    "mask_pick_replaced",
    "edit",
    "edit_declined",
    "delete",
    "split",
    "pad",
    "truncate",
    "final_budget",
    "final_step_cap",
    "final_ban",
    "no_change_exit",
    "cycle_resample",
];
