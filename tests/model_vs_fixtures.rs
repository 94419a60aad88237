//! The CPU engine against the PyTorch oracle's fixtures (tools/reference.py, float64, no KV cache).

mod common;

use common::{fixture, greedy_params, ids, logits_errors, make_fixture_model};
use dllm::backend::cpu::CpuBackend;
use dllm::checkpoint::Checkpoint;
use dllm::engine::Engine;
use dllm::tokenizer::Tokenizer;
use std::path::PathBuf;

fn tiny(tag: &str, fx: &serde_json::Value) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dllm-fx-{}-{tag}", std::process::id()));
    make_fixture_model(fx, &dir);
    dir
}

#[test]
fn logits_match_reference() {
    let fx = fixture("logits.json").expect("tests/fixtures/logits.json");
    let dir = tiny("logits", &fx);
    let ck = Checkpoint::open(&dir).unwrap();
    let mut b = CpuBackend::load(&ck).unwrap();
    let errs = logits_errors(&mut b, &ck.config, &fx);
    assert!(fx["cases"].as_array().unwrap().len() >= 5);
    for (name, pos, rel) in &errs {
        assert!(*rel < 1e-4, "{name} position {pos}: relative error {rel:e}");
    }
    let worst = errs.iter().map(|e| e.2).fold(0.0, f64::max);
    eprintln!("logits: {} positions, largest relative error {worst:e}", errs.len());
}

#[test]
fn greedy_generations_match_reference() {
    let fx = fixture("greedy.json").expect("tests/fixtures/greedy.json");
    let dir = tiny("greedy", &fx);
    let ck = Checkpoint::open(&dir).unwrap();
    let tok = Tokenizer::open(&dir, &ck.config).unwrap();
    let mut engine = Engine::new(CpuBackend::load(&ck).unwrap(), ck.config.clone(), tok.mask_id, tok.eos_id);
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let prompt = ids(&case["prompt_ids"]);
        if let Some(text) = case["prompt_text"].as_str() {
            assert_eq!(tok.encode(text).unwrap(), prompt, "{name}: tokenizer disagrees with the reference's");
        }
        let out = engine.generate(prompt, greedy_params(case)).unwrap();
        assert_eq!(out.output_ids, ids(&case["output_ids"]), "{name}: output ids differ");
        assert_eq!(out.steps as u64, case["num_steps"].as_u64().unwrap(), "{name}: denoising step count differs");
        assert_eq!(engine.active(), 0);
    }
    eprintln!("greedy: {} cases match token for token", cases.len());
}
