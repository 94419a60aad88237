//! Reading the PyTorch oracle's fixtures (tests/fixtures), shared by the CPU and CUDA tests;
//! `checkpoints`: editing test checkpoints' tensors.
#![allow(dead_code)]

pub mod checkpoints;

use dllm::backend::{Backend, BlockPool, LayerRouting, StepBatch};
use dllm::config::ModelConfig;
use dllm::decode::Policy;
use dllm::engine::GenParams;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub fn fixture(name: &str) -> Option<Value> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&p).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Make the checkpoint the fixtures came from in `dir` (the header's family, 2.0 without one),
/// checked byte for byte against them.
pub fn make_fixture_model(fx: &Value, dir: &Path) {
    let m = &fx["model"];
    let family = match m["family"].as_str() {
        None => dllm::config::Family::Llada20,
        Some(name) => <dllm::config::Family as clap::ValueEnum>::from_str(name, false).unwrap(),
    };
    let plan = dllm::make_model::Plan::for_family(m["preset"].as_str().unwrap(), family, m["seed"].as_u64().unwrap(), None).unwrap();
    plan.write(dir).unwrap();
    for (file, want) in m["sha256"].as_object().unwrap() {
        let got = format!("{:x}", Sha256::digest(std::fs::read(dir.join(file)).unwrap()));
        assert_eq!(&got, want.as_str().unwrap(), "{file} differs from the checkpoint the fixtures were made from");
    }
}

pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    assert!(got.iter().all(|x| x.is_finite()), "non-finite logits");
    let num: f64 = got.iter().zip(want).map(|(a, b)| (*a as f64 - b).powi(2)).sum::<f64>().sqrt();
    let den: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
    num / den.max(1e-30)
}

/// A logits fixture case's forward (its input_ids from position 0, its block_size) on `b`: the
/// case's positions and their logits rows, `vocab` floats each.
pub fn case_logits<B: Backend>(b: &mut B, cfg: &ModelConfig, case: &Value) -> (Vec<usize>, Vec<f32>) {
    let input = ids(&case["input_ids"]);
    let bs = case["block_size"].as_u64().unwrap() as usize;
    let positions: Vec<usize> = case["positions"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as usize).collect();
    let got = sequence_logits(b, cfg, &input, bs, &positions);
    (positions, got)
}

/// One fresh sequence of `tokens` from position 0 through `b`'s forward in blocks of `block`:
/// the logits rows of `rows`, `vocab` floats each (the sequence freed after).
pub fn sequence_logits<B: Backend>(b: &mut B, cfg: &ModelConfig, tokens: &[u32], block: usize, rows: &[usize]) -> Vec<f32> {
    let slot = b.alloc_seq(tokens.len()).unwrap();
    let mut batch = StepBatch::default();
    batch.push(slot, 0, tokens, block);
    let got = dllm::model::forward_logits(b, cfg, &batch, rows).unwrap();
    b.free_seq(slot);
    got
}

/// Every logits case through `b`: (case name, position, relative error vs the oracle).
pub fn logits_errors<B: Backend>(b: &mut B, cfg: &ModelConfig, fx: &Value) -> Vec<(String, usize, f64)> {
    let mut out = vec![];
    for case in fx["cases"].as_array().unwrap() {
        let (positions, got) = case_logits(b, cfg, case);
        let v = cfg.vocab_size;
        for (i, want) in case["logits"].as_array().unwrap().iter().enumerate() {
            let want: Vec<f64> = want.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            out.push((case["name"].as_str().unwrap().to_string(), positions[i], rel_err(&got[i * v..(i + 1) * v], &want)));
        }
    }
    out
}

/// The decoding parameters of a greedy case; its eos_id replaces the model's.
pub fn greedy_params(case: &Value) -> GenParams {
    GenParams {
        max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
        block_size: case["block_size"].as_u64().unwrap() as usize,
        steps: Some(case["steps"].as_u64().unwrap() as usize),
        policy: Policy::LowConfidence { threshold: case["threshold"].as_f64().unwrap() as f32 },
        stop_token_ids: vec![case["eos_id"].as_u64().unwrap() as u32],
        replace_eos: true,
        ..GenParams::default()
    }
}

/// The decoding parameters of a JointThreshold case; its eos_id replaces the model's.
pub fn joint_params(case: &Value) -> GenParams {
    GenParams {
        max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
        block_size: case["block_size"].as_u64().unwrap() as usize,
        steps: None,
        policy: Policy::JointThreshold(dllm::decode::joint_threshold::JointThreshold {
            threshold: case["threshold"].as_f64().unwrap() as f32,
            edit_threshold: case["edit_threshold"].as_f64().unwrap() as f32,
            max_post_edit_steps: case["max_post_edit_steps"].as_u64().unwrap() as usize,
        }),
        stop_token_ids: vec![case["eos_id"].as_u64().unwrap() as u32],
        replace_eos: true,
        ..GenParams::default()
    }
}

/// The JointThresholdInDel knobs of a case (the step fixtures' and the end-to-end ones').
pub fn indel_knobs(case: &Value) -> dllm::decode::joint_threshold_indel::JointThresholdInDel {
    dllm::decode::joint_threshold_indel::JointThresholdInDel {
        threshold: case["threshold"].as_f64().unwrap() as f32,
        edit_threshold: case["edit_threshold"].as_f64().unwrap() as f32,
        max_post_edit_steps: case["max_post_edit_steps"].as_u64().unwrap() as usize,
    }
}

/// The decoding parameters of a JointThresholdInDel case; its eos_id replaces the model's.
pub fn indel_params(case: &Value) -> GenParams {
    GenParams {
        max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
        block_size: case["block_size"].as_u64().unwrap() as usize,
        policy: Policy::JointThresholdInDel(indel_knobs(case)),
        stop_token_ids: vec![case["eos_id"].as_u64().unwrap() as u32],
        replace_eos: true,
        ..GenParams::default()
    }
}

/// Every rule of JointThresholdInDel's step as reference.py's `indel_step` names them
/// (POLICY_BRANCHES there, written down again here so that shrinking that list fails the tests
/// that compare the two): the InDel fixture sets must hit each.
pub const INDEL_RULES: &[&str] = &[
    "m2t_threshold",
    "m2t_top",
    "m2t_new_masks_all",
    "m2t_final_all",
    "quota_raised",
    "mask_pick_replaced",
    "edit",
    "edit_declined",
    "delete",
    "split",
    "pad",
    "truncate",
    "final_budget",
    "final_step_cap",
    "final_ban",
    "no_change_exit",
    "cycle_resample",
];

/// One routing decision two recorded forwards took apart (see [`routing_splits`]): the
/// decisions, and how close the call was on each side's biased scores.
#[derive(Debug, Clone)]
pub struct RouteSplit {
    pub layer: usize,
    /// `Some(block)`: the pool of that routing block; `None`: the picks of `row`.
    pub block: Option<usize>,
    pub row: usize,
    /// The decision each side took, as sets (sorted): the reference's, the other's.
    pub reference: Vec<usize>,
    pub other: Vec<usize>,
    /// The reference's margin at its cut, on its own scores: a pool's admission score (an
    /// expert's largest biased score over the block's rows) of the last admitted expert minus
    /// that of the first rejected one; a row's biased score of its k-th pick minus that of the
    /// best expert it left (of the pool, under block routing).
    pub cut_margin: f32,
    /// The score gap the other's decision inverts, on the reference's scores: the best expert
    /// only the reference took minus the worst only the other took. How far apart two scores
    /// had to move for the other decision; equal to `cut_margin` when one expert swapped at the
    /// cut, larger when the swap reaches past it.
    pub swap_gap: f32,
    /// The same gap on the other side's scores: <= 0 where the other side's own scores rank its
    /// choice first (its selection followed its scores).
    pub other_swap_gap: f32,
}

/// Per expert, its largest biased score over `rows` (the pool's admission score).
pub fn admission_scores(biased: &[Vec<f32>], rows: std::ops::Range<usize>) -> Vec<f32> {
    let e = biased[rows.start].len();
    (0..e).map(|x| biased[rows.clone()].iter().map(|r| r[x]).fold(f32::NEG_INFINITY, f32::max)).collect()
}

fn sorted(v: &[usize]) -> Vec<usize> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}

/// `score` of the best expert in `a` but not in `b`, minus that of the worst in `b` but not in
/// `a` (`a` and `b` differ and have the same size).
fn swap_gap(score: &[f32], a: &[usize], b: &[usize]) -> f32 {
    let best = a.iter().filter(|x| !b.contains(x)).map(|&x| score[x]).fold(f32::NEG_INFINITY, f32::max);
    let worst = b.iter().filter(|x| !a.contains(x)).map(|&x| score[x]).fold(f32::INFINITY, f32::min);
    best - worst
}

/// `score` of the worst expert in `taken` minus that of the best of `candidates` outside it
/// (+inf where every candidate was taken).
fn cut_margin(score: &[f32], taken: &[usize], candidates: &[usize]) -> f32 {
    let worst = taken.iter().map(|&x| score[x]).fold(f32::INFINITY, f32::min);
    let best_left = candidates.iter().filter(|x| !taken.contains(x)).map(|&x| score[x]).fold(f32::NEG_INFINITY, f32::max);
    worst - best_left
}

/// The routing decisions two recordings of one forward took apart, layer by layer (the
/// recordings hold the same MoE layers, rows and blocks). Within a layer a pool that differs is
/// one decision and its block's rows' picks follow from it (not listed); picks are compared,
/// as sets, in blocks whose pools agree (every row under per-token routing).
pub fn routing_splits(reference: &[LayerRouting], other: &[LayerRouting]) -> Vec<RouteSplit> {
    assert_eq!(reference.len(), other.len(), "the recordings hold different numbers of MoE layers");
    let mut out = vec![];
    for (r, o) in reference.iter().zip(other) {
        assert_eq!((r.layer, r.picks.len(), r.pools.len()), (o.layer, o.picks.len(), o.pools.len()), "recordings of different forwards");
        let e = r.biased[0].len();
        let every: Vec<usize> = (0..e).collect();
        let mut rows_decided_by_pool = vec![false; r.picks.len()];
        for (b, (rp, op)) in r.pools.iter().zip(&o.pools).enumerate() {
            assert_eq!(rp.rows, op.rows, "layer {}: routing blocks differ", r.layer);
            let (rs, os) = (sorted(&rp.experts), sorted(&op.experts));
            if rs == os {
                continue;
            }
            rows_decided_by_pool[rp.rows.clone()].iter_mut().for_each(|d| *d = true);
            let (ra, oa) = (admission_scores(&r.biased, rp.rows.clone()), admission_scores(&o.biased, op.rows.clone()));
            out.push(RouteSplit {
                layer: r.layer,
                block: Some(b),
                row: rp.rows.start,
                cut_margin: cut_margin(&ra, &rs, &every),
                swap_gap: swap_gap(&ra, &rs, &os),
                other_swap_gap: swap_gap(&oa, &rs, &os),
                reference: rs,
                other: os,
            });
        }
        for (t, (rk, ok)) in r.picks.iter().zip(&o.picks).enumerate() {
            let (rs, os) = (sorted(rk), sorted(ok));
            if rows_decided_by_pool[t] || rs == os {
                continue;
            }
            let candidates = r.pools.iter().find(|p| p.rows.contains(&t)).map_or(every.clone(), |p| p.experts.clone());
            out.push(RouteSplit {
                layer: r.layer,
                block: None,
                row: t,
                cut_margin: cut_margin(&r.biased[t], &rs, &candidates),
                swap_gap: swap_gap(&r.biased[t], &rs, &os),
                other_swap_gap: swap_gap(&o.biased[t], &rs, &os),
                reference: rs,
                other: os,
            });
        }
    }
    out
}

/// A block-routed recording's decisions made again on the host from its own biased scores by
/// the CPU twin's rules (cpu::block_pool, cpu::pick_in_pool): what the recording should hold if
/// its router followed its scores.
pub fn replay_block_routing(rec: &[LayerRouting], capacity: usize, k: usize) -> Vec<LayerRouting> {
    rec.iter()
        .map(|l| {
            let e = l.biased[0].len();
            let pools: Vec<BlockPool> = l
                .pools
                .iter()
                .map(|p| {
                    let flat: Vec<f32> = l.biased[p.rows.clone()].concat();
                    BlockPool { rows: p.rows.clone(), experts: dllm::backend::cpu::block_pool(&flat, e, capacity) }
                })
                .collect();
            let picks = (0..l.picks.len())
                .map(|t| {
                    let pool = &pools.iter().find(|p| p.rows.contains(&t)).expect("a row outside every routing block").experts;
                    dllm::backend::cpu::pick_in_pool(&l.biased[t], pool, k)
                })
                .collect();
            LayerRouting { layer: l.layer, picks, pools, biased: l.biased.clone() }
        })
        .collect()
}

/// Per MoE layer, the largest |difference| between two recordings' biased scores.
pub fn biased_score_gaps(a: &[LayerRouting], b: &[LayerRouting]) -> Vec<(usize, f32)> {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = x.biased.iter().flatten().zip(y.biased.iter().flatten()).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
            (x.layer, d)
        })
        .collect()
}
