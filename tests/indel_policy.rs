//! JointThresholdInDel against its float64 twin, step by step (tools/reference.py
//! `indel-policy-fixtures` writes tests/fixtures/indel_policy.json from seeded synthetic logits,
//! no model): every step's output block, whether the block stays open and the rules it took must
//! match exactly, and the fixture set must hit every rule, so its coverage cannot shrink.

mod common;

use dllm::decode::joint_threshold_indel::{EditIds, InDelState};
use dllm::decode::output::{after_block, stop_ids};
use serde_json::Value;
use std::collections::BTreeSet;

/// Every rule `indel_step` names: the fixture set must hit each (common::INDEL_RULES, reference.py's
/// POLICY_BRANCHES written down again so that shrinking that list fails this test).
const BRANCHES: &[&str] = common::INDEL_RULES;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/indel_policy.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("tests/fixtures/indel_policy.json")).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Replays one case; returns the branches its steps took (per step, as the Rust step names them).
fn replay(fx: &Value, case: &Value) -> Vec<BTreeSet<String>> {
    let name = case["name"].as_str().unwrap();
    let ids = EditIds {
        mask: fx["mask_id"].as_u64().unwrap() as u32,
        delete: fx["delete_id"].as_u64().unwrap() as u32,
        split: fx["split_id"].as_u64().unwrap() as u32,
    };
    let unit = fx["logit_unit"].as_f64().unwrap() as f32;
    let a = common::indel_knobs(case);
    let b = case["block_size"].as_u64().unwrap() as usize;
    let fixed = case["fixed"].as_u64().unwrap() as usize;
    let steps = case["steps"].as_array().unwrap();
    let mut block = u32s(&steps[0]["input"]);
    assert_eq!(block.len(), b, "{name}");
    assert_eq!(block[..fixed], u32s(&case["prompt"])[..], "{name}: the prompt");
    assert!(block[fixed..].iter().all(|&t| t == ids.mask), "{name}: a block starts masked after its prompt");
    let mut probs = vec![0.0f32; b];
    let mut state = InDelState::start(&block, fixed, ids.mask);
    let mut taken = vec![];
    for (k, st) in steps.iter().enumerate() {
        assert_eq!(block, u32s(&st["input"]), "{name} step {k}: the input is the previous step's output");
        let logits: Vec<f32> = st["logits_x16"].as_array().unwrap().iter().flat_map(logit_units).map(|x| x as f32 / unit).collect();
        let s = a.step(&mut state, &block, &probs, &logits, ids);
        let want_br: BTreeSet<String> = st["branches"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
        let got_br: BTreeSet<String> = s.branches.iter().map(|x| x.to_string()).collect();
        assert_eq!(s.tokens, u32s(&st["output"]), "{name} step {k}: the block after the step");
        assert_eq!(s.open, st["open"].as_bool().unwrap(), "{name} step {k}: open");
        assert_eq!(got_br, want_br, "{name} step {k}: the rules taken");
        assert_eq!(s.tokens.len(), b);
        assert!(
            (fixed..b).all(|i| s.tokens[i] == ids.mask || s.probs[i] > 0.0),
            "{name} step {k}: every decoded token carries the probability of the pick that wrote it"
        );
        assert!(k < a.max_steps(b), "{name}: more steps than the limit");
        block = s.tokens;
        probs = s.probs;
        taken.push(got_br);
        if !s.open {
            assert_eq!(k + 1, steps.len(), "{name}: the block closed before the fixture's last step");
        }
    }
    // The end of generation after the block, as the engine decides it.
    let generated = &block[fixed..];
    let eos = case["eos_id"].as_u64().unwrap() as u32;
    let max_new = case["max_new_tokens"].as_u64().unwrap() as usize;
    let (cut, _, done) = after_block(generated, max_new, &stop_ids(&[], eos, false, false), 0, ids.mask);
    assert_eq!(cut, u32s(&case["output_ids"]), "{name}: the output");
    assert_eq!(done, case["generation_done"].as_bool().unwrap(), "{name}: generation ends after the block");
    assert!(!generated.contains(&ids.delete) && !generated.contains(&ids.split), "{name}: no edit token survives its step");
    taken
}

fn logit_units(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

#[test]
fn every_step_matches_the_reference() {
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    let mut hit = BTreeSet::new();
    let mut n = 0;
    for case in cases {
        for br in replay(&fx, case) {
            n += 1;
            hit.extend(br);
        }
    }
    eprintln!("{} cases, {n} steps", cases.len());
    // Coverage: every rule, blocks of 8 and 32, and a block whose EOS ends generation.
    let missing: Vec<&&str> = BRANCHES.iter().filter(|b| !hit.contains(**b)).collect();
    assert!(missing.is_empty(), "no fixture step takes {missing:?}");
    let listed: BTreeSet<&str> = fx["branches"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(listed, BRANCHES.iter().copied().collect(), "reference.py's POLICY_BRANCHES and this list differ");
    let sizes: BTreeSet<u64> = cases.iter().map(|c| c["block_size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, BTreeSet::from([8, 32]));
    assert!(
        cases.iter().any(|c| c["eos_in_block"].as_bool().unwrap() && c["generation_done"].as_bool().unwrap()),
        "no case ends generation on an EOS inside its block"
    );
    assert!(
        cases.iter().any(|c| c["eos_in_block"].as_bool().unwrap() && !c["generation_done"].as_bool().unwrap())
            || cases.iter().any(|c| !c["generation_done"].as_bool().unwrap()),
        "no case goes on after its block"
    );
}
