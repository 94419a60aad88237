//! JointThresholdInDel through the CPU engine against the PyTorch oracle, end to end
//! (tools/reference.py `indel-engine-fixtures`, float64, no KV cache): the tiny LLaDA2.0 fixture
//! checkpoint with two ordinary ids standing in for DELETE and SPLIT (the decoder does not depend
//! on the model; tests/indel_22.rs runs it on the tiny 2.2 checkpoint's own ids). Blocks whose layout
//! changes step to step must leave the K/V cache holding their final tokens: any stale K/V would
//! change later blocks' picks.

mod common;

use common::{fixture, ids, indel_params, make_fixture_model};
use dllm::backend::cpu::CpuBackend;
use dllm::checkpoint::Checkpoint;
use dllm::engine::{Engine, Event};
use dllm::tokenizer::Tokenizer;

fn cases_match(tag: &str, budget: impl Fn(usize) -> usize) {
    let fx = fixture("indel_engine.json").expect("tests/fixtures/indel_engine.json");
    let dir = std::env::temp_dir().join(format!("dllm-fx-{}-{tag}", std::process::id()));
    make_fixture_model(&fx, &dir);
    let ck = Checkpoint::open(&dir).unwrap();
    let tok = Tokenizer::open(&dir, &ck.config).unwrap();
    let mut cfg = ck.config.clone();
    cfg.delete_token_id = Some(fx["delete_id"].as_u64().unwrap() as u32);
    cfg.split_token_id = Some(fx["split_id"].as_u64().unwrap() as u32);
    let mut engine = Engine::new(CpuBackend::load(&ck).unwrap(), cfg, tok.mask_id, tok.eos_id);
    assert!(engine.edit_ids.is_ok(), "{:?}", engine.edit_ids);
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 3, "{} cases", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let params = indel_params(case);
        engine.max_forward_tokens = budget(params.block_size);
        // Streamed as the server does: each finished block's event holds everything so far, which
        // later blocks only extend (a block's text is final when the block is).
        let id = engine.add(ids(&case["prompt_ids"]), params).unwrap();
        let (mut streamed, mut out) = (Vec::<Vec<u32>>::new(), None);
        while out.is_none() {
            for ev in engine.step() {
                match ev {
                    Event::Block { id: i, generated } if i == id => streamed.push(generated.ids),
                    Event::Done { id: i, output } if i == id => out = Some(output),
                    Event::Failed { error, .. } => panic!("{name}: {error}"),
                    _ => {}
                }
            }
        }
        let out = out.unwrap();
        assert_eq!(streamed.len(), out.blocks, "{name}: one event per finished block");
        for w in streamed.windows(2) {
            assert!(w[1].starts_with(&w[0]), "{name}: a later block's event rewrote an earlier block");
        }
        assert_eq!(streamed.last(), Some(&out.output_ids), "{name}: the last event is the output");
        assert_eq!(out.output_ids, ids(&case["output_ids"]), "{name}: output ids differ");
        assert_eq!(out.steps as u64, case["num_steps"].as_u64().unwrap(), "{name}: denoising step count differs");
        assert_eq!(engine.active(), 0);
    }
    // The cases do delete and split (the reference keeps only such ones).
    for b in ["delete", "split"] {
        assert!(cases.iter().all(|c| c["branches"][b].as_u64().unwrap_or(0) > 0), "a case without {b}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!("indel ({tag}): {} cases match token for token", cases.len());
}

#[test]
fn indel_generations_match_reference() {
    cases_match("indel", |_| dllm::engine::DEFAULT_CHUNKED_PREFILL);
}

#[test]
fn indel_generations_match_reference_one_block_per_forward() {
    // Every finished block is committed by a prefill-only forward of its own (its final tokens).
    cases_match("indel-chunk1", |b| b);
}
