//! The CPU engine against the PyTorch oracle's fixtures (tools/reference.py, float64, no KV cache).

mod common;

use common::{fixture, greedy_params, ids, joint_params, logits_errors, make_fixture_model};
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
    logits_fixture_matches("logits.json", "logits");
}

/// LLaDA2.2's block routing: the tiny 2.2 checkpoint (a pool of 6 of its 16 experts per block
/// of 32), including sequences that end inside a routing block.
#[test]
fn block_routing_logits_match_reference() {
    logits_fixture_matches("block_routing_logits.json", "br-logits");
}

fn logits_fixture_matches(file: &str, tag: &str) {
    let fx = fixture(file).unwrap_or_else(|| panic!("tests/fixtures/{file}"));
    let dir = tiny(tag, &fx);
    let ck = Checkpoint::open(&dir).unwrap();
    let mut b = CpuBackend::load(&ck).unwrap();
    let errs = logits_errors(&mut b, &ck.config, &fx);
    assert!(fx["cases"].as_array().unwrap().len() >= 5);
    for (name, pos, rel) in &errs {
        assert!(*rel < 1e-4, "{name} position {pos}: relative error {rel:e}");
    }
    let worst = errs.iter().map(|e| e.2).fold(0.0, f64::max);
    eprintln!("{file}: {} positions, largest relative error {worst:e}", errs.len());
}

/// What chunked prefill did for one greedy case.
struct CaseRun {
    name: String,
    prompt_blocks: usize,
    blocks: usize,
    prefill_forwards: u64,
}

/// Every greedy case through one engine whose forward budget is `budget(block size)`.
fn greedy_cases_match(tag: &str, budget: impl Fn(usize) -> usize) -> Vec<CaseRun> {
    greedy_fixture_matches("greedy.json", tag, budget)
}

/// Every greedy case of `file` through one engine whose forward budget is `budget(block size)`.
fn greedy_fixture_matches(file: &str, tag: &str, budget: impl Fn(usize) -> usize) -> Vec<CaseRun> {
    let fx = fixture(file).unwrap_or_else(|| panic!("tests/fixtures/{file}"));
    let dir = tiny(tag, &fx);
    let ck = Checkpoint::open(&dir).unwrap();
    let tok = Tokenizer::open(&dir, &ck.config).unwrap();
    let mut engine = Engine::new(CpuBackend::load(&ck).unwrap(), ck.config.clone(), tok.mask_id, tok.eos_id);
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    let mut runs = vec![];
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let prompt = ids(&case["prompt_ids"]);
        if let Some(text) = case["prompt_text"].as_str() {
            assert_eq!(tok.encode(text).unwrap(), prompt, "{name}: tokenizer disagrees with the reference's");
        }
        let params = greedy_params(case);
        engine.max_forward_tokens = budget(params.block_size);
        let prompt_blocks = prompt.len() / params.block_size;
        let before = engine.prefill_forwards;
        let out = engine.generate(prompt, params).unwrap();
        assert_eq!(out.output_ids, ids(&case["output_ids"]), "{name}: output ids differ");
        assert_eq!(out.steps as u64, case["num_steps"].as_u64().unwrap(), "{name}: denoising step count differs");
        assert_eq!(engine.active(), 0);
        runs.push(CaseRun { name: name.into(), prompt_blocks, blocks: out.blocks, prefill_forwards: engine.prefill_forwards - before });
    }
    eprintln!("{file} ({tag}): {} cases match token for token", cases.len());
    runs
}

#[test]
fn greedy_generations_match_reference() {
    // The default budget holds every case's prompt: nothing is chunked.
    for r in greedy_cases_match("greedy", |_| dllm::engine::DEFAULT_CHUNKED_PREFILL) {
        assert_eq!(r.prefill_forwards, 0, "{}", r.name);
    }
}

#[test]
fn greedy_generations_match_reference_one_block_per_forward() {
    // Each prompt block is its own prefill forward, and so is each finished block before the
    // next block's first step (that step would carry two blocks).
    for r in greedy_cases_match("greedy-chunk1", |b| b) {
        assert_eq!(r.prefill_forwards, (r.prompt_blocks + r.blocks - 1) as u64, "{}", r.name);
    }
}

#[test]
fn greedy_generations_match_reference_two_blocks_per_forward() {
    // Two prompt blocks per prefill forward until at most one is left for the first step;
    // later steps carry two blocks at most and fit.
    let runs = greedy_cases_match("greedy-chunk2", |b| 2 * b);
    assert!(runs.iter().any(|r| r.prefill_forwards > 0));
    for r in runs {
        assert_eq!(r.prefill_forwards, (r.prompt_blocks / 2) as u64, "{}", r.name);
    }
}

#[test]
fn block_routing_greedy_generations_match_reference() {
    for r in greedy_fixture_matches("block_routing_greedy.json", "br-greedy", |_| dllm::engine::DEFAULT_CHUNKED_PREFILL) {
        assert_eq!(r.prefill_forwards, 0, "{}", r.name);
    }
}

#[test]
fn block_routing_greedy_generations_match_reference_one_block_per_forward() {
    // Every routing block in a forward of its own: the prompt's blocks through prefill, each
    // step over the current block alone.
    for r in greedy_fixture_matches("block_routing_greedy.json", "br-greedy-chunk1", |b| b) {
        assert_eq!(r.prefill_forwards, (r.prompt_blocks + r.blocks - 1) as u64, "{}", r.name);
    }
}

#[test]
fn block_routing_fixtures_cover_the_cases() {
    let fx = fixture("block_routing_greedy.json").expect("tests/fixtures/block_routing_greedy.json");
    assert_eq!(fx["model"]["family"], "llada2.2");
    let dir = tiny("br-cover", &fx);
    let cfg = Checkpoint::open(&dir).unwrap().config;
    let br = cfg.block_routing().expect("the fixtures' checkpoint routes per block");
    assert!(br.capacity < cfg.num_experts && br.capacity >= cfg.num_experts_per_tok, "a pool that constrains: {br:?}");
    let cases = fx["cases"].as_array().unwrap();
    let mid_block = |c: &serde_json::Value| !(ids(&c["prompt_ids"]).len() as u64).is_multiple_of(c["block_size"].as_u64().unwrap());
    assert!(cases.iter().all(|c| c["block_size"].as_u64() == Some(br.block as u64)));
    assert!(cases.iter().any(mid_block), "a prompt ending mid-block");
    assert!(cases.iter().any(|c| !mid_block(c)), "a prompt ending on a boundary");
    assert!(
        cases.iter().any(|c| {
            let out = ids(&c["output_ids"]);
            out.last() == Some(&(c["eos_id"].as_u64().unwrap() as u32)) && (out.len() as u64) < c["max_new_tokens"].as_u64().unwrap()
        }),
        "an EOS that ends the output"
    );
    let lf = fixture("block_routing_logits.json").expect("tests/fixtures/block_routing_logits.json");
    let short = |c: &serde_json::Value| !(c["input_ids"].as_array().unwrap().len()).is_multiple_of(br.block);
    assert!(lf["cases"].as_array().unwrap().iter().any(short), "a forward ending inside a routing block");
}

/// Every JointThreshold case (LLaDA2.1's decoder) through the CPU engine, token for token and
/// step for step, with the forward budget `budget(block size)`.
fn joint_cases_match(tag: &str, budget: impl Fn(usize) -> usize) {
    let fx = fixture("joint_threshold.json").expect("tests/fixtures/joint_threshold.json");
    let dir = tiny(tag, &fx);
    let ck = Checkpoint::open(&dir).unwrap();
    let tok = Tokenizer::open(&dir, &ck.config).unwrap();
    let mut engine = Engine::new(CpuBackend::load(&ck).unwrap(), ck.config.clone(), tok.mask_id, tok.eos_id);
    let cases = fx["cases"].as_array().unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let params = joint_params(case);
        engine.max_forward_tokens = budget(params.block_size);
        let out = engine.generate(ids(&case["prompt_ids"]), params).unwrap();
        assert_eq!(out.output_ids, ids(&case["output_ids"]), "{name}: output ids differ");
        assert_eq!(out.steps as u64, case["num_steps"].as_u64().unwrap(), "{name}: denoising step count differs");
        assert_eq!(engine.active(), 0);
    }
    eprintln!("joint threshold ({tag}): {} cases match token for token", cases.len());
}

#[test]
fn joint_threshold_generations_match_reference() {
    joint_cases_match("joint", |_| dllm::engine::DEFAULT_CHUNKED_PREFILL);
}

#[test]
fn joint_threshold_generations_match_reference_one_block_per_forward() {
    // Every finished block is committed by a prefill-only forward of its own (its final tokens).
    joint_cases_match("joint-chunk1", |b| b);
}

#[test]
fn joint_threshold_fixtures_cover_every_branch() {
    let fx = fixture("joint_threshold.json").expect("tests/fixtures/joint_threshold.json");
    let cases = fx["cases"].as_array().unwrap();
    let any = |f: &dyn Fn(&serde_json::Value) -> bool| cases.iter().any(f);
    let n = |c: &serde_json::Value, k: &str| c[k].as_u64().unwrap();
    let blocks = |c: &serde_json::Value| c["block_size"].as_u64().unwrap();
    let mid_block = |c: &serde_json::Value| !(ids(&c["prompt_ids"]).len() as u64).is_multiple_of(blocks(c));
    assert!(any(&|c| n(c, "edits") > 0), "an edit that fires");
    assert!(any(&|c| n(c, "declined_edits") > 0 && n(c, "edits") == 0), "edits that never fire");
    assert!(any(&|c| n(c, "budget_blocks") > 0), "a block ended by the post-edit budget");
    assert!(any(&|c| n(c, "budget_blocks") > 0 && c["max_post_edit_steps"] == 0), "a budget of 0");
    assert!(any(&|c| n(c, "settled_blocks") > 0), "a block ended by a step that changed nothing");
    assert!(any(&|c| n(c, "unmask_fallback_steps") > 0), "an unmask below the threshold (the most confident)");
    assert!(any(&|c| n(c, "unmask_threshold_steps") > 0), "unmasks above the threshold");
    for b in [8, 32] {
        assert!(any(&|c| blocks(c) == b && mid_block(c)), "block {b}, prompt ending mid-block");
        assert!(any(&|c| blocks(c) == b && !mid_block(c)), "block {b}, prompt ending on a boundary");
        assert!(
            any(&|c| blocks(c) == b && {
                let out = ids(&c["output_ids"]);
                out.last() == Some(&(n(c, "eos_id") as u32)) && (out.len() as u64) < n(c, "max_new_tokens")
            }),
            "block {b}: an EOS inside a block ends the output"
        );
    }
}
