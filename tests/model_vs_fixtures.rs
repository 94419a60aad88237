//! The CPU engine against the PyTorch oracle's fixtures (tools/reference.py, float64, no KV cache).

use dllm::backend::cpu::CpuBackend;
use dllm::backend::{Backend, StepBatch};
use dllm::checkpoint::Checkpoint;
use dllm::engine::{Engine, GenParams, Policy};
use dllm::make_model::make_model;
use dllm::tokenizer::Tokenizer;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

fn fixture(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// The tiny checkpoint the fixtures were made from, regenerated and checked byte for byte.
fn tiny(fx: &Value) -> PathBuf {
    let m = &fx["model"];
    let seed = m["seed"].as_u64().unwrap();
    let dir = std::env::temp_dir().join(format!("dllm-fx-{}-{}", std::process::id(), rand_tag()));
    make_model(m["preset"].as_str().unwrap(), &dir, seed).unwrap();
    for (file, want) in m["sha256"].as_object().unwrap() {
        let got = format!("{:x}", Sha256::digest(std::fs::read(dir.join(file)).unwrap()));
        assert_eq!(&got, want.as_str().unwrap(), "{file} differs from the checkpoint the fixtures were made from");
    }
    dir
}

fn rand_tag() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn logits_match_reference() {
    let fx = fixture("logits.json");
    let dir = tiny(&fx);
    let ck = Checkpoint::open(&dir).unwrap();
    let cfg = ck.config.clone();
    let mut b = CpuBackend::load(&ck).unwrap();
    let mut worst = 0.0f64;
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let input = ids(&case["input_ids"]);
        let bs = case["block_size"].as_u64().unwrap() as usize;
        let positions: Vec<usize> = case["positions"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as usize).collect();
        let slot = b.alloc_seq(input.len()).unwrap();
        let mut batch = StepBatch::default();
        batch.push(slot, 0, &input, bs);
        let got = dllm::model::forward_logits(&mut b, &cfg, &batch, &positions).unwrap();
        b.free_seq(slot);
        let v = cfg.vocab_size;
        for (i, want) in case["logits"].as_array().unwrap().iter().enumerate() {
            let want: Vec<f64> = want.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            let g = &got[i * v..(i + 1) * v];
            let num: f64 = g.iter().zip(&want).map(|(a, b)| (*a as f64 - b).powi(2)).sum::<f64>().sqrt();
            let den: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
            let rel = num / den;
            assert!(rel < 1e-4, "{} position {}: relative error {rel:e}", case["name"], positions[i]);
            worst = worst.max(rel);
        }
    }
    eprintln!("logits: {} cases, largest relative error {worst:e}", cases.len());
}

#[test]
fn greedy_generations_match_reference() {
    let fx = fixture("greedy.json");
    let dir = tiny(&fx);
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
        let eos = case["eos_id"].as_u64().unwrap() as u32;
        let params = GenParams {
            max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
            block_size: case["block_size"].as_u64().unwrap() as usize,
            steps: Some(case["steps"].as_u64().unwrap() as usize),
            policy: Policy::LowConfidence { threshold: case["threshold"].as_f64().unwrap() as f32 },
            stop_token_ids: vec![eos],
            replace_eos: true,
            ..GenParams::default()
        };
        let out = engine.generate(prompt, params).unwrap();
        assert_eq!(out.output_ids, ids(&case["output_ids"]), "{name}: output ids differ");
        assert_eq!(out.steps as u64, case["num_steps"].as_u64().unwrap(), "{name}: denoising step count differs");
        assert_eq!(engine.active(), 0);
    }
    eprintln!("greedy: {} cases match token for token", cases.len());
}
