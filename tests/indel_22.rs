//! JointThresholdInDel end to end on a real (tiny) LLaDA2.2 checkpoint: `dllm make-model --preset
//! tiny --family llada2.2`, so block routing (a pool of 6 of its 16 experts per block of 32) and
//! the checkpoint's own `<|delete|>` / `<|split|>` ids from config.json, through the CPU engine
//! against the float64 oracle (tools/reference.py `indel-fixtures`, no KV cache). Each case is
//! followed step by step: after every denoising step the engine's current block must hold the
//! tokens the reference's block holds after that step, a block event must come exactly at the
//! steps that close a block, and the output ids and step count must be equal. Blocks whose layout
//! changes (deletes, splits, padding, truncation) must leave the K/V cache and the routing of
//! later forwards as the reference computes them from scratch.

mod common;

use common::{fixture, ids, indel_params, make_fixture_model};
use dllm::backend::cpu::CpuBackend;
use dllm::checkpoint::Checkpoint;
use dllm::engine::{Engine, Event};
use dllm::tokenizer::Tokenizer;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The rules of the decoder the fixture set must take on this checkpoint (the generator searches
/// prompts for each; docs/MODEL.md). Shrinking the fixtures' coverage fails the test.
const MUST_HIT: &[&str] = common::INDEL_RULES;

const FILE: &str = "indel.json";

fn load() -> Value {
    fixture(FILE).unwrap_or_else(|| panic!("tests/fixtures/{FILE}"))
}

fn n(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

/// Every case through one CPU engine whose forward budget is `budget(block size)`.
fn cases_match(tag: &str, budget: impl Fn(usize) -> usize) {
    let fx = load();
    assert_eq!(fx["model"]["family"], "llada2.2");
    let dir = std::env::temp_dir().join(format!("dllm-fx-{}-{tag}", std::process::id()));
    make_fixture_model(&fx, &dir);
    let ck = Checkpoint::open(&dir).unwrap();
    let tok = Tokenizer::open(&dir, &ck.config).unwrap();
    // The edit ids are the checkpoint's own, not stand-ins: config.json's, which are its
    // tokenizer's special tokens, and the ids the reference decoded with.
    let cfg = ck.config.clone();
    assert!(cfg.block_routing().is_some(), "the checkpoint routes per block");
    assert_eq!(cfg.delete_token_id, Some(n(&fx["delete_id"]) as u32));
    assert_eq!(cfg.split_token_id, Some(n(&fx["split_id"]) as u32));
    assert_eq!(tok.token_to_id("<|delete|>"), cfg.delete_token_id);
    assert_eq!(tok.token_to_id("<|split|>"), cfg.split_token_id);
    assert_eq!(tok.mask_id as usize, n(&fx["mask_id"]));
    let mut engine = Engine::new(CpuBackend::load(&ck).unwrap(), cfg, tok.mask_id, tok.eos_id);
    let edit = engine.edit_ids.clone().unwrap();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 5, "{} cases", cases.len());
    let mut total_steps = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let p = indel_params(case);
        let b = p.block_size;
        engine.max_forward_tokens = budget(b);
        let steps = case["steps"].as_array().unwrap();
        let id = engine.add(ids(&case["prompt_ids"]), p).unwrap();
        let (mut streamed, mut out) = (Vec::<Vec<u32>>::new(), None);
        let mut k = 0;
        while out.is_none() {
            assert!(k < steps.len(), "{name}: the engine takes more steps than the reference's {}", steps.len());
            let st = &steps[k];
            let mut closed = false;
            for ev in engine.step() {
                match ev {
                    Event::Block { id: i, generated } if i == id => {
                        closed = true;
                        streamed.push(generated.ids);
                    }
                    Event::Done { id: i, output } if i == id => out = Some(output),
                    Event::Failed { error, .. } => panic!("{name}: {error}"),
                    _ => {}
                }
            }
            assert_eq!(closed, !st["open"].as_bool().unwrap(), "{name} step {k}: the block closes at this step in one only");
            let blk = n(&st["block"]);
            let want = ids(&st["tokens"]);
            // The engine drops a request at its last step; that step's block is the output's end,
            // checked below.
            if let Some(t) = engine.tokens(id) {
                assert_eq!(&t[blk * b..(blk + 1) * b], &want[..], "{name} step {k} (block {blk}): the block after the step");
                if closed {
                    assert!(!want.iter().any(|&x| x == edit.mask || x == edit.delete || x == edit.split), "{name} step {k}: a final block");
                }
            }
            k += 1;
        }
        let out = out.unwrap();
        assert_eq!(k, steps.len(), "{name}: the engine finished after {k} steps, the reference after {}", steps.len());
        assert_eq!(streamed.len(), out.blocks, "{name}: one event per finished block");
        for w in streamed.windows(2) {
            assert!(w[1].starts_with(&w[0]), "{name}: a later block's event rewrote an earlier block");
        }
        assert_eq!(streamed.last(), Some(&out.output_ids), "{name}: the last event is the output");
        assert_eq!(out.output_ids, ids(&case["output_ids"]), "{name}: output ids differ");
        assert_eq!(out.steps, n(&case["num_steps"]), "{name}: denoising step count differs");
        assert_eq!(engine.active(), 0);
        total_steps += out.steps;
    }
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!("{FILE} ({tag}): {} cases, {total_steps} steps, equal block for block after every step", cases.len());
}

#[test]
fn indel_22_generations_match_reference_step_by_step() {
    cases_match("indel22", |_| dllm::engine::DEFAULT_CHUNKED_PREFILL);
}

#[test]
fn indel_22_generations_match_reference_one_block_per_forward() {
    // Each prompt block is prefilled alone, and each finished block is committed by a
    // prefill-only forward of its own (its final tokens) before the next block's first step.
    cases_match("indel22-chunk1", |b| b);
}

/// What the fixtures cover, from the reference's rule log: every rule in MUST_HIT, and the shapes
/// of generation around them.
#[test]
fn indel_22_fixtures_cover_the_decoder() {
    let fx = load();
    let cases = fx["cases"].as_array().unwrap();
    let mut hit = BTreeSet::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        // The per-case counts are the sum of its steps' rules (the log is whole).
        let mut counts = BTreeMap::<String, u64>::new();
        for st in case["steps"].as_array().unwrap() {
            for br in st["branches"].as_array().unwrap() {
                *counts.entry(br.as_str().unwrap().to_string()).or_default() += 1;
            }
        }
        let recorded: BTreeMap<String, u64> =
            case["branches"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect();
        assert_eq!(counts, recorded, "{name}: the step log and the counts differ");
        assert_eq!(case["steps"].as_array().unwrap().len(), n(&case["num_steps"]), "{name}");
        for w in case["want"].as_array().unwrap() {
            assert!(counts.contains_key(w.as_str().unwrap()), "{name}: chosen for {w}, which it does not take");
        }
        hit.extend(counts.into_keys());
    }
    let missing: Vec<&&str> = MUST_HIT.iter().filter(|b| !hit.contains(**b)).collect();
    assert!(missing.is_empty(), "no case takes {missing:?}");
    // The reference's list of rules is the one indel_policy.rs checks; what no case takes is said
    // in the fixture.
    let listed: BTreeSet<&str> = fx["branches"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert!(MUST_HIT.iter().all(|b| listed.contains(b)), "a rule the reference does not name");
    let not_hit: BTreeSet<&str> = fx["not_hit"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(not_hit, listed.iter().copied().filter(|b| !hit.contains(*b)).collect(), "the fixture's not_hit list");

    let b = |c: &Value| n(&c["block_size"]);
    let prompt_len = |c: &Value| c["prompt_ids"].as_array().unwrap().len();
    assert!(cases.iter().all(|c| b(c) == 32), "the decode block is the routing block");
    assert!(cases.iter().any(|c| !prompt_len(c).is_multiple_of(b(c))), "a prompt ending mid-block");
    assert!(cases.iter().any(|c| prompt_len(c).is_multiple_of(b(c))), "a prompt ending on a boundary");
    let blocks = |c: &Value| c["steps"].as_array().unwrap().iter().map(|s| n(&s["block"])).collect::<BTreeSet<_>>().len();
    assert!(cases.iter().any(|c| blocks(c) >= 2), "a generation over several blocks");
    // An EOS inside a block (not its last position) ends the output early.
    assert!(
        cases.iter().any(|c| {
            let out = ids(&c["output_ids"]);
            let eos = n(&c["eos_id"]) as u32;
            out.last() == Some(&eos) && out.len() < n(&c["max_new_tokens"]) && !(prompt_len(c) + out.len()).is_multiple_of(b(c))
        }),
        "an EOS inside a block that ends the output"
    );
    // The output cut at max_new_tokens inside a block.
    assert!(
        cases.iter().any(|c| {
            let out = ids(&c["output_ids"]);
            out.len() == n(&c["max_new_tokens"]) && !(prompt_len(c) + out.len()).is_multiple_of(b(c))
        }),
        "an output cut at max_new_tokens inside a block"
    );
    // The knobs vary: several budgets and both presets' thresholds.
    let budgets: BTreeSet<usize> = cases.iter().map(|c| n(&c["max_post_edit_steps"])).collect();
    assert!(budgets.contains(&0) && budgets.contains(&16) && budgets.len() >= 3, "{budgets:?}");
    assert!(cases.iter().any(|c| c["edit_threshold"].as_f64().unwrap() > 0.0));
}
