//! `--balanced-router` (bench::router_balance) on the CPU backend: random weights of mini's
//! router layout (experts in groups, group-limited top-k) route most tokens to a few experts;
//! balanced as training balances them, fresh tokens spread about evenly and a block reaches more
//! experts, and only the routers' biases changed.

mod common;

use common::checkpoints::write_drawn_weights;
use dllm::backend::cpu::CpuBackend;
use dllm::backend::Measure;
use dllm::bench::router_balance::{balance_router, balancing_offsets, BALANCE_ROUNDS};
use dllm::checkpoint::{random_init, Checkpoint};
use dllm::config::{preset, ModelConfig};
use dllm::rng::Rng;
use std::path::Path;

/// A small model of mini's layout (64 experts in 8 groups, top-8 of the best 4 groups), its
/// weights drawn by the random-weight rule the benchmarks draw by.
fn write_small_router_model(dir: &Path) -> ModelConfig {
    let mut c = preset("mini").unwrap();
    c.hidden_size = 512;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = Some(128);
    c.intermediate_size = 256;
    c.moe_intermediate_size = 16;
    c.num_experts = 64;
    c.vocab_size = 2048;
    c.eos_token_id = Some(2046);
    c.mask_token_id = Some(2047);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_string(&c).unwrap()).unwrap();
    write_drawn_weights(dir, &c, &mut Rng::new(3), |name, shape| {
        let r = random_init(name, shape, &c);
        (r.mean, r.std, r.f32)
    });
    c
}

#[test]
fn balanced_routers_spread_fresh_tokens() {
    let dir = std::env::temp_dir().join(format!("dllm-router-balance-{}", std::process::id()));
    let cfg = write_small_router_model(&dir);
    let ck = Checkpoint::open(&dir).unwrap();
    let mut cpu = CpuBackend::load(&ck).unwrap();
    let moe_layers: Vec<usize> = (0..cfg.num_hidden_layers).filter(|&l| cfg.is_moe_layer(l)).collect();
    let drawn: Vec<Vec<f32>> = moe_layers.iter().map(|&l| cpu.expert_bias(l).unwrap()).collect();
    let avoid = [cfg.eos_token_id.unwrap(), cfg.mask_token_id.unwrap()];
    // Blocks of 8 rows: 64 picks over 64 experts, ~42 distinct when the picks are independent.
    let r = balance_router(&mut cpu, &cfg, &avoid, 8, BALANCE_ROUNDS, 5).unwrap();
    eprintln!("{r:?}");
    assert!(r.before.busiest_over_mean > 2.0, "the random weights as drawn were already balanced: {:?}", r.before);
    assert!(r.after.busiest_over_mean < 1.6, "fresh tokens still crowd an expert: {:?}", r.after);
    // Independent picks of 8 a row would reach 64 (1 - (56/64)^8) = 42.0 experts a block.
    let independent = 64.0 * (1.0 - (56.0f64 / 64.0).powi(8));
    assert!(r.after.experts_per_block > r.before.experts_per_block + 3.0, "a block reaches no more experts: {r:?}");
    assert!(
        r.after.experts_per_block > 0.95 * independent,
        "a block reaches {:.1} experts, short of {independent:.1}",
        r.after.experts_per_block
    );
    // Only the biases moved, and every MoE layer's did.
    for (&l, d) in moe_layers.iter().zip(&drawn) {
        let now = cpu.expert_bias(l).unwrap();
        assert!(now.iter().zip(d).any(|(a, b)| a != b), "layer {l}'s bias did not move");
    }
    assert!(cpu.expert_bias(0).is_err(), "layer 0 is dense: no expert bias");
    assert!(cpu.set_expert_bias(moe_layers[0], &[0.0; 3]).is_err(), "a bias of the wrong length is refused");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The update alone, on scores whose shared part sends every row to the same experts: the
/// offsets it finds spread the rows' picks to within a fifth of the mean load.
#[test]
fn balancing_offsets_even_the_loads() {
    let mut c = preset("mini").unwrap();
    c.num_experts = 64;
    let mut rng = Rng::new(9);
    let shared: Vec<f32> = (0..64).map(|_| 0.3 * rng.normal() as f32).collect();
    let rows: Vec<Vec<f32>> = (0..1024).map(|_| shared.iter().map(|s| 0.5 + s + 0.05 * rng.normal() as f32).collect()).collect();
    let loads = |d: &[f32]| {
        let mut load = vec![0usize; 64];
        for r in &rows {
            let b: Vec<f32> = r.iter().zip(d).map(|(x, y)| x + y).collect();
            for e in dllm::backend::cpu::select_experts(&b, &c) {
                load[e] += 1;
            }
        }
        load
    };
    let mean = 1024.0 * 8.0 / 64.0;
    let before = loads(&[0.0; 64]);
    let after = loads(&balancing_offsets(&rows, &c));
    eprintln!("loads as drawn {before:?}\nbalanced {after:?}");
    assert!(*before.iter().max().unwrap() as f64 > 4.0 * mean);
    assert!(after.iter().all(|&l| (l as f64 - mean).abs() <= 0.2 * mean), "loads {after:?} around {mean}");
}
