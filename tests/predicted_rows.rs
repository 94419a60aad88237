//! Which rows a step's lm_head predicts: LowConfidence and FixedCount read only the picks of
//! positions still masked, so a step predicts those rows alone; the edit algorithms read every
//! position's pick, so theirs predict the whole block.

use dllm::backend::cpu::CpuBackend;
use dllm::checkpoint::Checkpoint;
use dllm::decode::joint_threshold::JointThreshold;
use dllm::decode::Policy;
use dllm::engine::{Engine, Event, GenParams};
use std::path::PathBuf;
use std::sync::OnceLock;

fn tiny() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("dllm-predicted-rows-{}", std::process::id()));
        dllm::make_model::make_model("tiny", &d, 5).expect("making the tiny model");
        d
    })
    .clone()
}

/// Each step's predicted rows for one request of `policy` (blocks of 8, a prompt of 11, so the
/// first generated block holds 3 prompt tokens), and the steps it took.
fn predicted_per_step(policy: Policy) -> (Vec<usize>, usize) {
    let ck = Checkpoint::open(&tiny()).unwrap();
    let tok = dllm::tokenizer::Tokenizer::open(&tiny(), &ck.config).unwrap();
    let mut engine = Engine::new(CpuBackend::load(&ck).unwrap(), ck.config.clone(), tok.mask_id, tok.eos_id);
    let prompt: Vec<u32> = (0..11).map(|i| (i * 37 + 5) % 280).collect();
    let params = GenParams { max_new_tokens: 21, block_size: 8, policy, ignore_eos: true, ..GenParams::default() };
    let id = engine.add(prompt, params).unwrap();
    let mut rows = vec![];
    loop {
        let events = engine.step();
        rows.push(engine.predicted_rows);
        for e in events {
            match e {
                Event::Done { id: i, output } if i == id => return (rows, output.steps),
                Event::Failed { error, .. } => panic!("{error}"),
                _ => {}
            }
        }
    }
}

#[test]
fn low_confidence_steps_predict_only_masked_positions() {
    let (rows, steps) = predicted_per_step(Policy::LowConfidence { threshold: 0.95 });
    assert_eq!(rows.len(), steps);
    // The first block's first step: its 5 masked positions (3 hold the prompt's tail).
    assert_eq!(rows[0], 5, "{rows:?}");
    // Each step unmasks at least one position: within a block the rows fall, and a new block
    // starts at 8 again.
    assert!(rows.iter().all(|&r| (1..=8).contains(&r)), "{rows:?}");
    let restarts = rows.windows(2).filter(|w| w[1] >= w[0]).count();
    assert!(restarts <= 3, "{restarts} steps predicted no fewer rows than the one before: {rows:?}");
    assert!(rows.iter().sum::<usize>() < 8 * steps, "{rows:?}");
}

#[test]
fn edit_algorithms_predict_the_whole_block() {
    let jt = JointThreshold { threshold: 0.9, edit_threshold: 0.5, max_post_edit_steps: 2 };
    let (rows, steps) = predicted_per_step(Policy::JointThreshold(jt));
    assert_eq!(rows, vec![8; steps]);
}
