//! The benchmark harness on the CPU backend: it measures what it says (experts counted from
//! the routing, floor from those bytes), so a GPU run only changes the backend.

use dllm::backend::cpu::CpuBackend;
use dllm::bench::{bench_generate, bench_steps, step_bytes, StepBenchArgs};
use dllm::checkpoint::Checkpoint;
use dllm::engine::Engine;
use dllm::tokenizer::Tokenizer;

/// Each test makes its own checkpoint: tests run in parallel, and rewriting a file another
/// test has mapped would pull it out from under that test.
fn engine(tag: &str) -> Engine<CpuBackend> {
    let dir = std::env::temp_dir().join(format!("dllm-bench-{}-{tag}", std::process::id()));
    dllm::make_model::make_model("tiny", &dir, 0).unwrap();
    let ck = Checkpoint::open(&dir).unwrap();
    let tok = Tokenizer::open(&dir, &ck.config).unwrap();
    Engine::new(CpuBackend::load(&ck).unwrap(), ck.config.clone(), tok.mask_id, tok.eos_id)
}

#[test]
fn step_bench_counts_experts_and_reports_against_the_floor() {
    let mut e = engine("floor");
    let cfg = e.cfg.clone();
    let runs = bench_steps(&mut e, &StepBenchArgs { batches: vec![1, 3], tp_size: 1, prefix: 32, block: 8, steps: 3, seed: 1 }).unwrap();
    assert_eq!(runs.len(), 2);
    for r in &runs {
        assert_eq!(r.timed_steps, 3);
        assert!(r.experts_touched_per_layer >= cfg.num_experts_per_tok as f64);
        assert!(r.experts_touched_per_layer <= cfg.num_experts as f64);
        assert!(r.step_ms > 0.0 && r.floor_ms > 0.0 && (r.over_floor - r.step_ms / r.floor_ms).abs() < 1e-9);
    }
    // More requests route to at least as many experts, and the bytes follow.
    assert!(runs[1].experts_touched_per_layer >= runs[0].experts_touched_per_layer);
    assert!(runs[1].weight_bytes >= runs[0].weight_bytes && runs[1].kv_bytes == 3.0 * runs[0].kv_bytes);
    assert_eq!(e.active(), 0, "the bench leaves no request behind");
    // Touching every expert bounds the bytes from above.
    let all = step_bytes(&cfg, &[], 3, 32, 8);
    assert!(all.weights >= runs[1].weight_bytes);
}

#[test]
fn step_bench_rejects_a_ragged_prefix() {
    let mut e = engine("ragged");
    let err = bench_steps(&mut e, &StepBenchArgs { batches: vec![1], tp_size: 1, prefix: 30, block: 8, steps: 3, seed: 1 }).unwrap_err();
    assert!(err.to_string().contains("multiple of --block"), "{err}");
    // Degenerate shapes are errors, not divisions by zero.
    for (block, steps) in [(0, 1), (1, 1), (8, 0), (8, 8)] {
        let args = StepBenchArgs { batches: vec![1], tp_size: 1, prefix: 8, block, steps, seed: 1 };
        assert!(bench_steps(&mut e, &args).is_err(), "block {block} steps {steps}");
    }
    assert!(bench_generate(&mut e, 1, 8, 8, 0, 8, 0).is_err(), "0 tokens per step");
    assert!(bench_generate(&mut e, 1, 8, 0, 1, 8, 0).is_err(), "block 0");
}

#[test]
fn generate_bench_completes_every_request() {
    let mut e = engine("generate");
    let r = bench_generate(&mut e, 3, 16, 8, 2, 20, 0).unwrap();
    assert_eq!(r.new_tokens, 3 * 20);
    // 20 tokens at 8 per block and 2 per step: 3 blocks of 4 steps.
    assert_eq!(r.steps, 12);
}
