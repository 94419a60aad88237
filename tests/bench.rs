//! The benchmark harness on the CPU backend: it measures what it says (experts counted from
//! the routing, floor from those bytes), so a GPU run only changes the backend.

use dllm::backend::cpu::CpuBackend;
use dllm::bench::prefill::{bench_prefill, PrefillBenchArgs};
use dllm::bench::{bench_generate, bench_steps, step_bytes, StepBenchArgs, TokenMode};
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
    let args = StepBenchArgs { block: 8, steps: 3, seed: 1, ..step_args(vec![1, 3], TokenMode::Mask) };
    let runs = bench_steps(&mut e, &args).unwrap();
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
    let args = StepBenchArgs { prefix: 30, block: 8, steps: 3, seed: 1, ..step_args(vec![1], TokenMode::Mask) };
    let err = bench_steps(&mut e, &args).unwrap_err();
    assert!(err.to_string().contains("multiple of --block"), "{err}");
    // Degenerate shapes are errors, not divisions by zero.
    for (block, steps) in [(0, 1), (1, 1), (8, 0), (8, 8)] {
        let args = StepBenchArgs { prefix: 8, block, steps, seed: 1, ..step_args(vec![1], TokenMode::Mask) };
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

/// LLaDA2.2 (block routing): a step of one request routes one block of 32, so it touches at
/// most expert_capacity experts per layer, and the floor counts those; three requests, three
/// routing blocks, may touch more.
#[test]
fn block_routed_step_bench_counts_at_most_the_pool() {
    let dir = std::env::temp_dir().join(format!("dllm-bench-{}-br", std::process::id()));
    dllm::make_model::Plan::for_family("tiny", dllm::config::Family::Llada22, 0, None).unwrap().write(&dir).unwrap();
    let ck = Checkpoint::open(&dir).unwrap();
    let tok = Tokenizer::open(&dir, &ck.config).unwrap();
    let mut e = Engine::new(CpuBackend::load(&ck).unwrap(), ck.config.clone(), tok.mask_id, tok.eos_id);
    let cap = ck.config.block_routing().unwrap().capacity as f64;
    let runs = bench_steps(&mut e, &step_args(vec![1, 3], TokenMode::Random)).unwrap();
    let (one, three) = (runs[0].experts_touched_per_layer, runs[1].experts_touched_per_layer);
    assert!(one >= ck.config.num_experts_per_tok as f64 && one <= cap, "batch 1: {one} experts/layer, pool {cap}");
    assert!(three >= one && three <= (3.0 * cap).min(ck.config.num_experts as f64), "batch 3: {three}");
    assert!(runs[0].weight_bytes < step_bytes(&ck.config, &[], 1, 32, 32).weights, "the floor counts the touched experts");
    let err = bench_steps(&mut e, &StepBenchArgs { block: 8, prefix: 32, steps: 4, ..step_args(vec![1], TokenMode::Random) }).unwrap_err();
    assert!(format!("{err:#}").contains("routes its experts per block of 32"), "{err:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn step_args(batches: Vec<usize>, tokens: TokenMode) -> StepBenchArgs {
    StepBenchArgs { batches, tp_size: 1, prefix: 32, block: 32, steps: 8, seed: 3, tokens, temperature: 0.0, top_p: 1.0, top_k: 0 }
}

#[test]
fn random_block_tokens_route_to_more_experts_than_masks() {
    let mut e = engine("tokens");
    let mask = bench_steps(&mut e, &step_args(vec![1], TokenMode::Mask)).unwrap();
    let random = bench_steps(&mut e, &step_args(vec![1], TokenMode::Random)).unwrap();
    // On random weights a block of masks shares one embedding and routes to few experts;
    // random ids spread it (tiny: 16 experts, top-4, 2 MoE layers).
    let (m, r) = (mask[0].experts_touched_per_layer, random[0].experts_touched_per_layer);
    assert!(r > m, "random {r} vs mask {m} experts/layer");
    assert!(r <= e.cfg.num_experts as f64);
    // More experts read, more bytes in the floor; the same step shape otherwise.
    assert!(random[0].weight_bytes > mask[0].weight_bytes);
    assert_eq!(random[0].kv_bytes, mask[0].kv_bytes);
    assert_eq!(random[0].timed_steps, mask[0].timed_steps);
    // `mask` is the code path the benchmark always had: the same routing every time.
    let again = bench_steps(&mut e, &step_args(vec![1], TokenMode::Mask)).unwrap();
    assert_eq!(again[0].experts_touched_per_layer, m);
    // The JSON says which it measured, and the experts/layer of every row.
    for (runs, name) in [(&random, "random"), (&mask, "mask")] {
        let v = serde_json::to_value(&runs[0]).unwrap();
        assert_eq!(v["tokens"], name, "{v}");
        assert!(v["experts_touched_per_layer"].as_f64().unwrap() > 0.0, "{v}");
        assert!(v.get("baseline_experts_per_layer").is_some(), "{v}");
    }
    // The fill is the benchmark's alone: the engine is left decoding for real.
    assert!(e.mask_fill.is_none());
    assert_eq!(e.active(), 0);
}

#[test]
fn random_block_tokens_keep_the_decoding_schedule() {
    // The fill changes what the forward sees, never which positions a step unmasks: a block of
    // 8 at one token a step takes 8 steps either way, and the output has the same length.
    let mut e = engine("schedule");
    let params = dllm::engine::GenParams {
        max_new_tokens: 16,
        block_size: 8,
        policy: dllm::decode::Policy::FixedCount { k: 1 },
        ignore_eos: true,
        ..Default::default()
    };
    let prompt: Vec<u32> = (1..17).collect(); // two whole blocks
    let real = e.generate(prompt.clone(), params.clone()).unwrap();
    let again = e.generate(prompt.clone(), params.clone()).unwrap();
    assert_eq!(real, again, "decoding is deterministic");
    let vocab = e.cfg.vocab_size;
    e.mask_fill = Some(dllm::engine::RandomFill::new(7, vocab, &[e.mask_id, e.eos_id]).unwrap());
    let filled = e.generate(prompt, params).unwrap();
    assert_eq!((filled.steps, filled.blocks, filled.output_ids.len()), (real.steps, real.blocks, real.output_ids.len()));
    assert_eq!(real.steps, 16);
    // Only impossible fills are refused.
    assert!(dllm::engine::RandomFill::new(0, 2, &[0, 1]).is_err());
    assert!(dllm::engine::RandomFill::new(0, 0, &[]).is_err());
    let mut one = dllm::engine::RandomFill::new(0, 3, &[0, 2, 9]).unwrap();
    assert!((0..50).all(|_| one.draw() == 1));
}

fn prefill_args(prompt_lens: Vec<usize>, batches: Vec<usize>) -> PrefillBenchArgs {
    PrefillBenchArgs { prompt_lens, batches, tp_size: 1, block: 8, repeats: 2, seed: 5, tokens: TokenMode::Random }
}

#[test]
fn prefill_bench_reports_against_its_floor() {
    let mut e = engine("prefill");
    let cfg = e.cfg.clone();
    let runs = bench_prefill(&mut e, &prefill_args(vec![40, 100], vec![1, 2])).unwrap();
    assert_eq!(runs.len(), 4);
    for r in &runs {
        assert!(r.ms > 0.0 && r.ms_min <= r.ms && r.ms <= r.ms_max && r.repeats == 2);
        assert!(r.flops > 0.0 && r.floor_ms > 0.0 && r.over_floor.is_finite() && r.over_floor > 0.0, "{r:?}");
        assert!((r.over_floor - r.ms / r.floor_ms).abs() < 1e-9);
        assert!(r.tokens_per_s > 0.0 && r.weight_bytes > 0.0 && r.kv_bytes > 0.0);
        assert!(r.experts_touched_per_layer >= cfg.num_experts_per_tok as f64);
        assert!(r.experts_touched_per_layer <= cfg.num_experts as f64);
        // Within the default budget: one forward, the step's own.
        assert_eq!(r.forwards.len(), 1);
        assert!(r.forwards[0].predicts);
        // The CPU backend measures no matrix rate: the bytes bind.
        assert!(r.compute_floor_ms.is_none() && r.bound == "memory");
    }
    // (prompt 40, block 8: 5 prompt blocks and the first generated one, 48 positions a request.)
    assert_eq!(runs[0].forwards[0].tokens, 48);
    assert_eq!(runs[1].forwards[0].tokens, 96);
    // Twice the requests, twice the FLOPs; a longer prompt, more.
    assert!((runs[1].flops / runs[0].flops - 2.0).abs() < 1e-9);
    assert!(runs[2].flops > runs[0].flops);
    let v = serde_json::to_value(&runs[0]).unwrap();
    for k in
        ["prompt_len", "batch", "ms", "tokens_per_s", "experts_touched_per_layer", "flops", "floor_ms", "over_floor", "forwards", "tokens"]
    {
        assert!(v.get(k).is_some(), "{k} missing from {v}");
    }
    assert_eq!(e.active(), 0, "the bench leaves no request behind");
    assert!(e.mask_fill.is_none());

    // Chunked as the engine chunks it: the same FLOPs in more forwards, each counted.
    e.max_forward_tokens = 32;
    let chunked = bench_prefill(&mut e, &prefill_args(vec![100], vec![2])).unwrap();
    let c = &chunked[0];
    assert!(c.forwards.len() > 2, "{:?}", c.forwards);
    assert!(c.forwards.iter().all(|f| f.tokens <= 32));
    assert_eq!(c.forwards.iter().filter(|f| f.predicts).count(), 1);
    assert!(c.forwards.last().unwrap().predicts);
    assert_eq!(c.forwards.iter().map(|f| f.tokens).sum::<usize>(), 2 * 104);
    assert_eq!(c.flops, runs[3].flops);
    // Each forward reads the weights again: more bytes than one forward.
    assert!(c.weight_bytes > runs[3].weight_bytes);
}

#[test]
fn prefill_bench_refuses_what_it_cannot_run() {
    let mut e = engine("prefill-args");
    let ctx = e.context_len;
    let err = |a: PrefillBenchArgs, e: &mut Engine<CpuBackend>| format!("{:#}", bench_prefill(e, &a).unwrap_err());
    // A prompt and its first block past the model's positions: named, with the longest that fits.
    let msg = err(prefill_args(vec![ctx], vec![1]), &mut e);
    assert!(
        msg.contains(&format!("--prompt-len {ctx} does not fit")) && msg.contains(&format!("the longest prompt is {}", ctx - 8)),
        "{msg}"
    );
    bench_prefill(&mut e, &PrefillBenchArgs { repeats: 1, ..prefill_args(vec![ctx - 8], vec![1]) }).unwrap();
    assert!(err(prefill_args(vec![0], vec![1]), &mut e).contains("--prompt-len"));
    assert!(err(prefill_args(vec![8], vec![0]), &mut e).contains("--batch"));
    assert!(err(prefill_args(vec![], vec![1]), &mut e).contains("--prompt-len"));
    assert!(err(PrefillBenchArgs { repeats: 0, ..prefill_args(vec![8], vec![1]) }, &mut e).contains("--repeats"));
    assert!(err(PrefillBenchArgs { block: 0, ..prefill_args(vec![8], vec![1]) }, &mut e).contains("--block"));
    assert_eq!(e.active(), 0);
}

/// A tiny checkpoint of this test's own, for the CLI.
fn checkpoint(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dllm-bench-cli-{}-{tag}", std::process::id()));
    dllm::make_model::make_model("tiny", &dir, 0).unwrap();
    dir
}

fn dllm_bench(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dllm")).arg("bench").args(args).output().unwrap()
}

#[test]
fn the_bench_cli_writes_its_modes_and_refuses_bad_arguments() {
    let dir = checkpoint("modes");
    let model = dir.to_str().unwrap();
    let json = dir.join("step.json");
    let out = dllm_bench(&[
        "step",
        "--preset",
        model,
        "--device",
        "cpu",
        "--batch",
        "1",
        "--prefix",
        "16",
        "--block",
        "8",
        "--steps",
        "2",
        "--tokens",
        "random,mask",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tokens") && stdout.contains("random") && stdout.contains("mask"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let tokens: Vec<&str> = v["runs"].as_array().unwrap().iter().map(|r| r["tokens"].as_str().unwrap()).collect();
    assert_eq!(tokens, ["random", "mask"]);

    let json = dir.join("prefill.json");
    let out = dllm_bench(&[
        "prefill",
        "--preset",
        model,
        "--device",
        "cpu",
        "--prompt-len",
        "24,40",
        "--batch",
        "1,2",
        "--block",
        "8",
        "--repeats",
        "1",
        "--chunked-prefill-size",
        "16",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for r in runs {
        assert!(r["floor_ms"].as_f64().unwrap() > 0.0 && r["over_floor"].as_f64().unwrap().is_finite(), "{r}");
        assert_eq!(r["chunked_prefill"], 16);
        assert!(r["forwards"].as_array().unwrap().len() > 1, "{r}");
    }

    // bench generate takes the server's token budget a forward, and says which it ran with.
    let json = dir.join("generate.json");
    let generate = |size: &str| {
        let args = ["generate", "--preset", model, "--device", "cpu", "--requests", "3", "--prefix", "24", "--block", "8"];
        let out =
            dllm_bench(&[&args[..], &["--max-new-tokens", "8", "--chunked-prefill-size", size, "--json", json.to_str().unwrap()]].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["run"]["new_tokens"], 24, "{v}");
        v["run"]["chunked_prefill"].clone()
    };
    assert_eq!(generate("16"), 16);
    assert_eq!(generate("-1"), serde_json::Value::Null);

    // Clear errors, not panics.
    let refused = |args: &[&str], want: &str| {
        let out = dllm_bench(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want) && !err.contains("panicked"), "{args:?}: {err}");
    };
    refused(&["prefill", "--preset", model, "--device", "cpu", "--prompt-len", "100000"], "does not fit");
    refused(&["prefill", "--preset", model, "--device", "cpu", "--prompt-len", "8", "--batch", "0"], "--batch must be at least 1");
    refused(&["step", "--preset", model, "--device", "cpu", "--tokens", "text"], "possible values: random, mask");
    refused(&["prefill", "--preset", "mini", "--device", "cpu"], "needs --device cuda");
    refused(&["step", "--preset", "tiny", "--family", "llada2.2", "--device", "cpu"], "needs --device cuda");
    refused(&["step", "--preset", model, "--device", "cpu", "--baseline", "/nonexistent.json"], "reading /nonexistent.json");
    refused(&["step", "--preset", model, "--device", "cpu", "--balanced-router"], "holds its own expert bias");
    refused(&["step", "--preset", "tiny", "--device", "cpu", "--balanced-router", "--balance-rounds", "0"], "at least 1");
    let unbalanced = "these routers are not balanced";
    refused(&["step", "--preset", "tiny", "--device", "cpu", "--balanced-router", "false", "--balance-rounds", "3"], unbalanced);
    refused(&["step", "--preset", model, "--device", "cpu", "--balance-rounds", "3"], unbalanced);
}

/// Realistic routing is the default for a preset's random routers (issue 13), and only there: a
/// checkpoint's trained routers stay as they are, and `--balanced-router false` keeps a preset's
/// as drawn. The JSON says which (`router_balance`).
#[test]
fn presets_are_balanced_by_default_and_checkpoints_never() {
    let dir = checkpoint("balance");
    let step = |preset: &str, extra: &[&str], tag: &str| -> serde_json::Value {
        let json = dir.join(format!("{tag}.json"));
        let mut args =
            vec!["step", "--preset", preset, "--device", "cpu", "--batch", "1", "--prefix", "16", "--block", "8", "--steps", "2"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--json", json.to_str().unwrap()]);
        let out = dllm_bench(&args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
    };
    let balanced = step("tiny", &[], "preset");
    let r = &balanced["router_balance"];
    assert!(r["after"]["busiest_over_mean"].as_f64().unwrap() < r["before"]["busiest_over_mean"].as_f64().unwrap(), "{r}");
    assert!(step("tiny", &["--balanced-router", "false"], "drawn").get("router_balance").is_none());
    assert!(step(dir.to_str().unwrap(), &[], "checkpoint").get("router_balance").is_none());
}
