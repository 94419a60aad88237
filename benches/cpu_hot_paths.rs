//! Host-side work that runs every denoising step, at the real shapes (block 32, vocab 157184):
//! the unmask policy, the sampler, the engine's own work a step, and one tiny-model CPU step.
//! Plain harness: `cargo bench --bench cpu_hot_paths` prints the median of many runs.

use dllm::backend::StepBatch;
use dllm::config::ModelConfig;
use dllm::decode::low_confidence::select as low_confidence;
use dllm::decode::row_top::RowTop;
use dllm::decode::sample::{apply_penalties, sample_row, History, RowDraw};
use dllm::decode::Pick;
use dllm::engine::{Engine, GenParams};
use dllm::rng::Rng;
use std::time::Instant;

fn median_us(mut f: impl FnMut(), iters: usize) -> f64 {
    for _ in 0..iters.min(10) {
        f();
    }
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

fn main() {
    let mut rng = Rng::new(1);
    let block = 32;
    let picks: Vec<Pick> = (0..block).map(|i| Pick { token: i as u32, prob: rng.uniform() as f32 }).collect();
    let masked: Vec<bool> = (0..block).map(|i| i % 3 != 0).collect();
    let us = median_us(|| drop(std::hint::black_box(low_confidence(&picks, &masked, 1, 0.95))), 10_000);
    println!("low_confidence, block {block}:                 {us:8.2} us");

    let vocab = 157_184;
    // Random normal logits (std 3): a flat worst case for top-p, whose nucleus is then wide.
    let logits: Vec<f32> = (0..vocab).map(|_| (rng.normal() * 3.0) as f32).collect();
    for (name, p) in [
        ("temperature only", GenParams { temperature: 0.8, ..GenParams::default() }),
        ("top_k 50", GenParams { temperature: 0.8, top_k: 50, ..GenParams::default() }),
        ("top_p 0.9", GenParams { temperature: 0.8, top_p: 0.9, ..GenParams::default() }),
        ("min_p 0.05", GenParams { temperature: 0.8, min_p: 0.05, ..GenParams::default() }),
    ] {
        let mut r = Rng::new(2);
        let us = median_us(
            || {
                std::hint::black_box(sample_row(&logits, &p.sampling(), &mut r));
            },
            50,
        );
        println!("sample_row {name:<18} vocab {vocab}: {us:8.1} us per position ({:.2} ms per block)", us * block as f64 / 1e3);
    }

    // Penalties and a bias over a 4k-token sequence: counted once per request and step, then
    // applied to each of the block's rows.
    let seq: Vec<u32> = (0..4096).map(|_| (rng.uniform() * vocab as f64) as u32).collect();
    let p = GenParams {
        repetition_penalty: 1.2,
        presence_penalty: 0.5,
        frequency_penalty: 0.5,
        logit_bias: vec![(5, 2.0), (7, -2.0)],
        ..GenParams::default()
    };
    let mut rows = logits.clone();
    let us = median_us(
        || {
            let h = History::new(&seq[..1024], &seq[1024..], u32::MAX);
            apply_penalties(&mut rows, &p.penalties(), &h);
        },
        50,
    );
    println!("penalties, 4096-token sequence, one row:  {us:8.1} us (the counting: once per block step)");

    for batch in [1, 16, 64, 128] {
        println!("engine host work a step, batch {batch:>3}:        {:8.1} us", engine_host_step_us(batch));
    }

    let dir = std::env::temp_dir().join(format!("dllm-bench-tiny-{}", std::process::id()));
    dllm::make_model::make_model("tiny", &dir, 0).expect("tiny model");
    let mut m = dllm::runtime::load(&dir, dllm::runtime::Device::Cpu).expect("load");
    let prompt: Vec<u32> = (0..64).map(|i| (i * 7 % 250) as u32).collect();
    let p = GenParams { max_new_tokens: 64, ..GenParams::default() };
    let us = median_us(|| drop(m.engine.generate(prompt.clone(), p.clone()).expect("generate")), 20);
    println!("tiny CPU generate, prompt 64, 64 new tokens:   {:8.2} ms", us / 1e3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A backend that answers at once: what is left of a step is the engine's own host work (the
/// batch, the picks' bookkeeping, the unmasking), which on the GPU runs while the device idles
/// between steps (docs/perf/session58: ~150 us at batch 64).
struct InstantRunner {
    rng: Rng,
}

impl dllm::engine::Runner for InstantRunner {
    fn label(&self) -> String {
        "instant".into()
    }
    fn seq_capacity(&self) -> usize {
        1 << 20
    }
    fn open_seq(&mut self, _max_len: usize) -> anyhow::Result<usize> {
        Ok(0)
    }
    fn close_seq(&mut self, _slot: usize) {}
    fn pick(&mut self, _cfg: &ModelConfig, _batch: &StepBatch, out_rows: &[usize]) -> anyhow::Result<Vec<Pick>> {
        Ok(out_rows.iter().map(|&r| Pick { token: (r % 1000) as u32, prob: self.rng.uniform() as f32 }).collect())
    }
    fn sample(&mut self, cfg: &ModelConfig, batch: &StepBatch, out_rows: &[usize], _draws: &[RowDraw]) -> anyhow::Result<Vec<Pick>> {
        self.pick(cfg, batch, out_rows)
    }
    fn samples(&self) -> bool {
        true
    }
    fn logits(&mut self, _cfg: &ModelConfig, _batch: &StepBatch, _out_rows: &[usize]) -> anyhow::Result<Vec<f32>> {
        anyhow::bail!("not measured")
    }
    fn summarizes(&self) -> bool {
        false
    }
    fn tops(&mut self, _cfg: &ModelConfig, _batch: &StepBatch, _out_rows: &[usize]) -> anyhow::Result<Vec<RowTop>> {
        anyhow::bail!("not measured")
    }
    fn logit_rows(&mut self, _rows: &[usize]) -> anyhow::Result<Vec<f32>> {
        anyhow::bail!("not measured")
    }
    fn prefill(&mut self, _cfg: &ModelConfig, _batch: &StepBatch) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The engine's host time a step at mini's shapes: `batch` requests of a 1,024-token prompt, two
/// tokens a step over 32-token blocks (`bench generate`'s decoding), greedy; the median step once
/// every prompt is prefilled.
fn engine_host_step_us(batch: usize) -> f64 {
    let cfg = dllm::config::preset("mini").expect("mini");
    let (mask, eos) = (cfg.mask_token_id.expect("mini's mask"), cfg.eos_token_id.expect("mini's eos"));
    let mut engine = Engine::new(InstantRunner { rng: Rng::new(3) }, cfg, mask, eos);
    let p = GenParams { max_new_tokens: 1 << 12, steps: Some(16), ignore_eos: true, ..GenParams::default() };
    for i in 0..batch {
        engine.add((0..1024).map(|t| ((t * 31 + i) % 150_000) as u32).collect(), p.clone()).expect("add");
    }
    let _ = engine.step(); // the prompts' prefill and the first block's first step
    let us = median_us(
        || {
            std::hint::black_box(engine.step());
        },
        400,
    );
    // A failed request leaves the engine, and later steps would time less work: all must run.
    assert_eq!(engine.active(), batch, "requests failed or finished while timed");
    us
}
