//! `dllm serve` with LLaDA2.1's JointThreshold: the algorithm from the flags, its YAML config
//! (SGLang's keys) or the checkpoint family, its knobs per request (checked, 400 when out of
//! range or not the server algorithm's), and answers, streamed or not, equal to the engine's.

use dllm::config::Family;
use dllm::decode::joint_threshold::JointThreshold;
use dllm::decode::joint_threshold_indel::JointThresholdInDel;
use dllm::decode::Policy;
use dllm::engine::GenParams;
use dllm::runtime::{self, Device};
use dllm::server::{self, RunningServer, ServeArgs};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

mod http_client;
use http_client::*;

fn tmp(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dllm-srv-jt-{}-{tag}", std::process::id()))
}

async fn serve_dir(dir: &Path, extra: &[&str]) -> RunningServer {
    let mut args = vec!["serve", "--model-path", dir.to_str().unwrap(), "--port", "0", "--device", "cpu", "--log-level", "error"];
    args.extend_from_slice(extra);
    server::start(ServeArgs::parse_from(args).unwrap()).await.expect("server starts")
}

/// The engine's own answer for `prompt` under `policy` (blocks of 8, greedy).
fn engine_ids(dir: &Path, prompt: &str, policy: Policy, max_new: usize) -> (Vec<u32>, usize) {
    let mut m = runtime::load(dir, Device::Cpu).unwrap();
    let ids = m.tokenizer.encode(prompt).unwrap();
    let p = GenParams { max_new_tokens: max_new, block_size: 8, policy, ignore_eos: true, ..GenParams::default() };
    let out = m.engine.generate(ids, p).unwrap();
    (out.output_ids, out.steps)
}

#[test]
fn the_algorithm_config_takes_sglang_keys() {
    let parse = |extra: &[&str]| {
        let mut a = vec!["serve"];
        a.extend_from_slice(extra);
        server::Settings::from_args(&ServeArgs::parse_from(a).unwrap())
    };
    let dir = tmp("yaml");
    std::fs::create_dir_all(&dir).unwrap();
    let y = dir.join("jt.yaml");
    std::fs::write(&y, "threshold: 0.7\nedit_threshold: 0.5\nmax_post_edit_steps: 4\npenalty_lambda: 0\n").unwrap();
    let y = y.to_str().unwrap();
    let want = Policy::JointThreshold(JointThreshold { threshold: 0.7, edit_threshold: 0.5, max_post_edit_steps: 4 });
    let s = parse(&["--dllm-algorithm", "JointThreshold", "--dllm-algorithm-config", y]).unwrap();
    assert_eq!(s.policy(Family::Llada20, false).unwrap(), want, "the flag wins over the family");
    // No algorithm flag: the checkpoint family decides, and reads the same file.
    let s = parse(&["--dllm-algorithm-config", y]).unwrap();
    assert_eq!(s.policy(Family::Llada21, false).unwrap(), want);
    let s = parse(&["--dllm-algorithm-config", y, "--threshold", "0.9"]).unwrap();
    assert_eq!(
        s.policy(Family::Llada21, false).unwrap(),
        Policy::JointThreshold(JointThreshold { threshold: 0.9, edit_threshold: 0.5, max_post_edit_steps: 4 })
    );
    // SGLang's defaults when the file says nothing.
    let s = parse(&["--dllm-algorithm", "JointThreshold"]).unwrap();
    assert_eq!(
        s.policy(Family::Llada20, false).unwrap(),
        Policy::JointThreshold(JointThreshold { threshold: 0.5, edit_threshold: 0.0, max_post_edit_steps: 16 })
    );
    let err = |extra: &[&str]| format!("{:#}", parse(extra).unwrap_err());
    // JointThresholdInDel reads the same keys; a 2.2 checkpoint picks it by default.
    let s = parse(&["--dllm-algorithm", "JointThresholdInDel", "--dllm-algorithm-config", y]).unwrap();
    let indel = JointThresholdInDel { threshold: 0.7, edit_threshold: 0.5, max_post_edit_steps: 4 };
    assert_eq!(s.policy(Family::Llada20, false).unwrap(), Policy::JointThresholdInDel(indel));
    let s = parse(&["--threshold", "0.6"]).unwrap();
    assert_eq!(
        s.policy(Family::Llada22, false).unwrap(),
        Policy::JointThresholdInDel(JointThresholdInDel { threshold: 0.6, ..Default::default() })
    );
    let bad = dir.join("bad.yaml");
    for (text, want) in [
        ("penalty_lambda: 0.5\n", "penalty_lambda"),
        ("edit_threshold: 3\n", "edit_threshold must be in [0, 1]"),
        ("max_post_edit_steps: 2.5\n", "max_post_edit_steps must be a whole number"),
        ("edit_threshold: high\n", "edit_threshold must be a number"),
    ] {
        std::fs::write(&bad, text).unwrap();
        let e = err(&["--dllm-algorithm", "JointThreshold", "--dllm-algorithm-config", bad.to_str().unwrap()]);
        assert!(e.contains(want), "{text}: {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_llada2_1_checkpoint_serves_joint_threshold_with_per_request_knobs() {
    let dir = tmp("v21");
    let _ = std::fs::remove_dir_all(&dir);
    dllm::make_model::Plan::for_family("tiny", Family::Llada21, 0, None).unwrap().write(&dir).unwrap();
    let srv = serve_dir(&dir, &["--diffusion-block-size", "8"]).await;
    let info = get(srv.addr, "/get_server_info").await.json();
    assert_eq!(info["dllm_algorithm"], "JointThreshold", "{info}");
    assert_eq!(info["edit_threshold"], 0.0);
    assert_eq!(get(srv.addr, "/get_model_info").await.json()["dllm_algorithm"], "JointThreshold");

    let sp = json!({"temperature": 0, "max_new_tokens": 20, "ignore_eos": true});
    let whole = post(srv.addr, "/generate", &json!({"text": PROMPT, "sampling_params": sp})).await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    let whole = whole.json();
    let (ids, steps) = engine_ids(&dir, PROMPT, Policy::JointThreshold(JointThreshold::default()), 20);
    assert_eq!(whole["output_ids"], json!(ids));
    assert_eq!(whole["meta_info"]["denoising_steps"], json!(steps));

    // Streamed: one event per finished block (a block's tokens are final only then), each
    // cumulative, the last one the whole answer.
    let r = post(srv.addr, "/generate", &json!({"text": PROMPT, "sampling_params": sp, "stream": true})).await;
    let ev = r.events();
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"), "{ev:?}");
    let ev: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(ev.len(), 3, "one event per block of 8 for 20 tokens: {ev:?}");
    let mut prev: Vec<Value> = vec![];
    for e in &ev {
        let ids = e["output_ids"].as_array().unwrap().clone();
        assert!(ids.len() > prev.len() && ids[..prev.len()] == prev[..], "not cumulative: {e}");
        prev = ids;
    }
    assert_eq!(ev.last().unwrap()["output_ids"], whole["output_ids"]);
    assert_eq!(ev.last().unwrap()["text"], whole["text"]);

    // The knobs per request: the engine's answer under the same settings.
    let knobs = json!({"temperature": 0, "max_new_tokens": 20, "ignore_eos": true, "threshold": 0.7, "edit_threshold": 0.5, "max_post_edit_steps": 2});
    let r = post(srv.addr, "/generate", &json!({"text": PROMPT, "sampling_params": knobs})).await.json();
    let jt = JointThreshold { threshold: 0.7, edit_threshold: 0.5, max_post_edit_steps: 2 };
    let (ids, steps) = engine_ids(&dir, PROMPT, Policy::JointThreshold(jt), 20);
    assert_eq!((r["output_ids"].clone(), r["meta_info"]["denoising_steps"].clone()), (json!(ids), json!(steps)));
    for (sp, want) in [
        (json!({"edit_threshold": 1.5}), "edit_threshold must be in [0, 1]"),
        (json!({"threshold": -0.1}), "threshold must be in [0, 1]"),
        (json!({"max_post_edit_steps": -1}), "max_post_edit_steps"),
        (json!({"max_post_edit_steps": 5000}), "max_post_edit_steps must be at most"),
        (json!({"edit_threshold": "high"}), "edit_threshold"),
        (json!({"steps": 4}), "steps applies to LowConfidence"),
    ] {
        let r = post(srv.addr, "/generate", &json!({"text": PROMPT, "sampling_params": sp})).await;
        assert_eq!(r.status, 400, "{sp}: {}", r.text());
        assert!(r.text().contains(want), "{sp}: {}", r.text());
    }
    // OpenAI's routes take the same knobs beside their own fields.
    let r = post(srv.addr, "/v1/completions", &json!({"prompt": PROMPT, "max_tokens": 20, "temperature": 0, "ignore_eos": true, "edit_threshold": 0.5, "threshold": 0.7, "max_post_edit_steps": 2})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    srv.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_confidence_server_refuses_edit_knobs() {
    let srv = serve(&["--threshold", "0"]).await;
    let info = get(srv.addr, "/get_server_info").await.json();
    assert_eq!(info["dllm_algorithm"], "LowConfidence", "a 2.0 checkpoint: {info}");
    let r = post(srv.addr, "/generate", &json!({"text": PROMPT, "sampling_params": {"max_new_tokens": 8, "edit_threshold": 0.5}})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("edit_threshold applies to JointThreshold and JointThresholdInDel only"), "{}", r.text());
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joint_threshold_indel_needs_a_checkpoint_with_edit_tokens() {
    // A 2.1 checkpoint has no delete_token_id / split_token_id: the server refuses to start
    // rather than decode with an algorithm it cannot run.
    let dir = tmp("indel21");
    let _ = std::fs::remove_dir_all(&dir);
    dllm::make_model::Plan::for_family("tiny", Family::Llada21, 0, None).unwrap().write(&dir).unwrap();
    let mut args = vec!["serve", "--model-path", dir.to_str().unwrap(), "--port", "0", "--device", "cpu", "--log-level", "error"];
    args.extend_from_slice(&["--dllm-algorithm", "JointThresholdInDel"]);
    let e = match server::start(ServeArgs::parse_from(args).unwrap()).await {
        Ok(_) => panic!("a server without edit tokens started JointThresholdInDel"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("--dllm-algorithm JointThresholdInDel") && e.contains("delete_token_id and split_token_id"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
