//! LLaDA2.2's block routing on the CPU: the selection rules (cpu::route_block, the CUDA
//! kernel's twin), the routing blocks a batch is cut into, and what config.json and the engine
//! refuse. The forward against the oracle is in model_vs_fixtures.rs.

mod common;

use dllm::backend::cpu::{route, route_block, CpuBackend};
use dllm::backend::{Measure, StepBatch};
use dllm::checkpoint::Checkpoint;
use dllm::config::{preset, Family, ModelConfig};
use dllm::rng::Rng;

fn cfg(capacity: usize, block: usize) -> ModelConfig {
    let mut c = preset("tiny").unwrap();
    c.n_group = 1;
    c.topk_group = 1;
    c.expert_capacity = Some(serde_json::json!(capacity));
    c.block_size = Some(block);
    c
}

fn uniform(rng: &mut Rng) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
}

fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (uniform(rng) * 2.0 - 1.0) * scale).collect()
}

#[test]
fn a_pool_of_every_expert_is_per_token_routing() {
    let c = cfg(16, 32);
    let e = c.num_experts;
    let mut rng = Rng::new(1);
    for rows in [1, 5, 32] {
        let logits = random(&mut rng, rows * e, 4.0);
        let bias = random(&mut rng, e, 0.1);
        let got = route_block(&logits, &bias, &c, e);
        for (r, g) in got.iter().enumerate() {
            assert_eq!(g, &route(&logits[r * e..(r + 1) * e], &bias, &c), "row {r} of {rows}");
        }
    }
}

#[test]
fn each_block_uses_at_most_capacity_experts_the_best_by_block_score() {
    let mut rng = Rng::new(2);
    for (capacity, rows) in [(4, 32), (6, 32), (6, 7), (9, 1), (16, 20)] {
        let c = cfg(capacity, 32);
        let e = c.num_experts;
        let logits = random(&mut rng, rows * e, 4.0);
        let bias = random(&mut rng, e, 0.1);
        let got = route_block(&logits, &bias, &c, capacity);
        // The pool by hand: block score = max over rows of sigmoid + bias.
        let b = |r: usize, x: usize| 1.0 / (1.0 + (-logits[r * e + x]).exp()) + bias[x];
        let score: Vec<f32> = (0..e).map(|x| (0..rows).map(|r| b(r, x)).fold(f32::NEG_INFINITY, f32::max)).collect();
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_by(|&x, &y| score[y].total_cmp(&score[x]).then(x.cmp(&y)));
        let pool = &order[..capacity];
        let mut used = vec![false; e];
        for (r, g) in got.iter().enumerate() {
            assert_eq!(g.len(), c.num_experts_per_tok);
            let ids: Vec<usize> = g.iter().map(|p| p.0).collect();
            assert!(ids.iter().all(|x| pool.contains(x)), "row {r}: {ids:?} outside the pool {pool:?}");
            // Rank order by the row's own biased score, the best of the pool.
            let mut best: Vec<usize> = pool.to_vec();
            best.sort_by(|&x, &y| b(r, y).total_cmp(&b(r, x)).then(x.cmp(&y)));
            assert_eq!(ids, best[..c.num_experts_per_tok], "row {r}");
            let s: Vec<f32> = ids.iter().map(|&x| 1.0 / (1.0 + (-logits[r * e + x]).exp())).collect();
            let sum: f32 = s.iter().sum();
            for (p, sv) in g.iter().zip(&s) {
                assert!((p.1 - sv / sum * c.routed_scaling_factor).abs() < 1e-6, "row {r}: weight {p:?}");
            }
            ids.iter().for_each(|&x| used[x] = true);
        }
        assert!(used.iter().filter(|&&u| u).count() <= capacity);
    }
}

#[test]
fn the_pool_constrains_a_token_s_choice() {
    // Row 0 prefers experts 0..4, rows 1..4 prefer 4..8 strongly; a pool of 4 keeps 4..8 (block
    // scores 0.99 against row 0's 0.9), so row 0 gets them too.
    let c = cfg(4, 32);
    let e = c.num_experts;
    let mut logits = vec![-5.0f32; 5 * e];
    logits[..4].fill(2.2); // sigmoid ~0.90
    for r in 1..5 {
        logits[r * e + 4..r * e + 8].fill(4.6); // ~0.99
    }
    let got = route_block(&logits, &vec![0.0; e], &c, 4);
    for g in &got {
        assert_eq!(g.iter().map(|p| p.0).collect::<Vec<_>>(), vec![4, 5, 6, 7]);
    }
    assert_ne!(route(&logits[..e], &vec![0.0; e], &c).iter().map(|p| p.0).collect::<Vec<_>>(), vec![4, 5, 6, 7]);
}

#[test]
fn ties_go_to_the_lower_expert() {
    let c = cfg(6, 32);
    let e = c.num_experts;
    let got = route_block(&vec![0.0; 3 * e], &vec![0.0; e], &c, 6);
    for g in got {
        assert_eq!(g.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert!(g.iter().all(|p| (p.1 - c.routed_scaling_factor / 4.0).abs() < 1e-7));
    }
    // A tie at the pool's cut: experts 5 and 9 have the same block score; 5 gets in.
    let mut logits = vec![-8.0f32; 2 * e];
    logits[..5].fill(3.0);
    logits[5] = 1.0;
    logits[e + 5] = 1.0;
    logits[e + 9] = 1.0;
    let got = route_block(&logits, &vec![0.0; e], &c, 6);
    assert!(got[1].iter().any(|p| p.0 == 5) && !got.iter().flatten().any(|p| p.0 == 9), "{got:?}");
}

#[test]
fn a_batch_is_cut_into_routing_blocks_per_run() {
    let mut b = StepBatch::default();
    b.push(0, 0, &[1; 70], 32); // two whole blocks and a short one
    b.push(1, 64, &[1; 32], 32); // one block
    b.push(2, 32, &[1; 5], 32); // a short block
    assert_eq!(b.routing_blocks(32).unwrap(), vec![0..32, 32..64, 64..70, 70..102, 102..107]);
    let mut mid = StepBatch::default();
    mid.push(0, 8, &[1; 8], 8);
    let e = mid.routing_blocks(32).unwrap_err().to_string();
    assert!(e.contains("starts at position 8, inside a routing block of 32"), "{e}");
}

#[test]
fn config_json_s_block_routing_keys_are_checked() {
    let base = serde_json::to_value(ModelConfig { vocab_size: 296, ..cfg(6, 32) }).unwrap();
    let with = |k: &str, v: serde_json::Value| {
        let mut j = base.clone();
        if v.is_null() {
            j.as_object_mut().unwrap().remove(k);
        } else {
            j[k] = v;
        }
        ModelConfig::from_json(&j.to_string())
    };
    let c = with("expert_capacity", 48.0.into()).map(|_| ()).unwrap_err().to_string();
    assert!(c.contains("expert_capacity (48) must be between num_experts_per_tok (4) and num_experts (16)"), "{c}");
    let c = with("expert_capacity", 1.0.into()).unwrap_err().to_string();
    assert!(c.contains("expert_capacity (1)"), "{c}");
    let c = with("expert_capacity", 6.5.into()).unwrap_err().to_string();
    assert!(c.contains("whole number"), "{c}");
    let c = with("block_size", serde_json::Value::Null).unwrap_err().to_string();
    assert!(c.contains("needs block_size"), "{c}");
    let ok = with("expert_capacity", 8.0.into()).unwrap();
    assert_eq!(ok.block_routing().map(|r| (r.capacity, r.block)), Some((8, 32)));
    assert_eq!(ok.family(), Family::Llada22);
    assert!(preset("tiny").unwrap().block_routing().is_none());
}

#[test]
fn make_model_writes_the_released_capacity_for_the_released_shapes() {
    for (name, want) in [("tiny", 6), ("mini", 48), ("flash", 48)] {
        let p = dllm::make_model::Plan::for_family(name, Family::Llada22, 0, None).unwrap();
        let br = p.cfg.block_routing().unwrap();
        assert_eq!((br.capacity, br.block), (want, 32), "{name}");
    }
}

/// Recording a forward's routing (Measure::record_routing) on the CPU, on the block-routing
/// fixtures' checkpoint with the 7-token (one short routing block) and 70-token (three blocks)
/// inputs: off by default, and the logits are the same bits with it on; one record per MoE
/// layer, each row's k picks, each routing block's pool of `capacity`, and the biased scores
/// they were made from, picks and pools being the twin's rules on those scores; the next
/// forward replaces the record. routing_splits finds a pool changed by hand and measures it.
#[test]
fn recorded_routing_is_the_forward_s_routing() {
    let fx = common::fixture("block_routing_logits.json").expect("tests/fixtures/block_routing_logits.json");
    let dir = std::env::temp_dir().join(format!("dllm-br-record-{}", std::process::id()));
    common::make_fixture_model(&fx, &dir);
    let ck = Checkpoint::open(&dir).unwrap();
    let cfg = ck.config.clone();
    let br = cfg.block_routing().unwrap();
    let (e, k) = (cfg.num_experts, cfg.num_experts_per_tok);
    let moe_layers: Vec<usize> = (0..cfg.num_hidden_layers).filter(|&l| cfg.is_moe_layer(l)).collect();
    let mut cpu = CpuBackend::load(&ck).unwrap();
    let cases: Vec<&serde_json::Value> =
        fx["cases"].as_array().unwrap().iter().filter(|c| [7, 70].contains(&c["input_ids"].as_array().unwrap().len())).collect();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let rows = case["input_ids"].as_array().unwrap().len();
        let (_, plain) = common::case_logits(&mut cpu, &cfg, case);
        assert!(cpu.routing().is_empty(), "recorded while off");
        cpu.record_routing(true);
        let (_, recorded) = common::case_logits(&mut cpu, &cfg, case);
        assert!(plain == recorded, "{rows} tokens: recording changed the logits");
        let rec = cpu.routing();
        assert_eq!(rec.iter().map(|l| l.layer).collect::<Vec<_>>(), moe_layers);
        let mut batch = StepBatch::default();
        batch.push(0, 0, &vec![0; rows], br.block);
        let blocks = batch.routing_blocks(br.block).unwrap();
        for l in &rec {
            assert_eq!(l.picks.len(), rows);
            assert!(l.picks.iter().all(|p| p.len() == k));
            assert_eq!(l.biased.len(), rows);
            assert!(l.biased.iter().all(|b| b.len() == e && b.iter().all(|v| v.is_finite())));
            assert_eq!(l.pools.iter().map(|p| p.rows.clone()).collect::<Vec<_>>(), blocks);
            for p in &l.pools {
                assert_eq!(p.experts.len(), br.capacity);
                assert!(l.picks[p.rows.clone()].iter().flatten().all(|x| p.experts.contains(x)), "a pick outside its pool");
            }
        }
        let replayed = common::replay_block_routing(&rec, br.capacity, k);
        assert!(common::routing_splits(&replayed, &rec).is_empty(), "the record is not the rules applied to its own scores");
        assert!(common::biased_score_gaps(&replayed, &rec).iter().all(|&(_, d)| d == 0.0));
        // The pool of the first MoE layer's first block with its last expert swapped for the
        // best one it left out: one split, that pool, measured on the scores it came from.
        let mut other = rec.clone();
        let first = &mut other[0];
        let admission = common::admission_scores(&first.biased, first.pools[0].rows.clone());
        let pool = first.pools[0].experts.clone();
        let rejected = (0..e).filter(|x| !pool.contains(x)).max_by(|&a, &b| admission[a].total_cmp(&admission[b]).then(b.cmp(&a))).unwrap();
        let last = *pool.last().unwrap();
        first.pools[0].experts[br.capacity - 1] = rejected;
        let splits = common::routing_splits(&rec, &other);
        assert_eq!(splits.len(), 1, "{splits:?}");
        let s = &splits[0];
        assert_eq!((s.layer, s.block, s.row), (moe_layers[0], Some(0), 0));
        assert_eq!(s.cut_margin, admission[last] - admission[rejected]);
        assert_eq!(s.swap_gap, s.cut_margin);
        assert!(s.cut_margin >= 0.0);
        // One changed pick, outside the pools' decisions: that row's split.
        let mut other = rec.clone();
        let row = rows - 1;
        let last_block = other[1].pools.last().unwrap().experts.clone();
        let left = *last_block.iter().find(|x| !other[1].picks[row].contains(x)).unwrap();
        other[1].picks[row][k - 1] = left;
        let splits = common::routing_splits(&rec, &other);
        assert_eq!(splits.len(), 1, "{splits:?}");
        assert_eq!((splits[0].layer, splits[0].block, splits[0].row), (moe_layers[1], None, row));
        assert!(splits[0].swap_gap >= splits[0].cut_margin && splits[0].cut_margin >= 0.0);
        cpu.record_routing(false);
        assert!(cpu.routing().is_empty());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
