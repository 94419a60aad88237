//! What real clients and their tools ask of `dllm serve`: SGLang's frontend fields, OpenAI's
//! model routes, fresh seeds, `/abort_request`, and the CLI checking a request as the server does.

mod http_client;
use http_client::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sglang_frontend_fields_and_result_changing_fields() {
    let srv = serve(&["--threshold", "0"]).await;
    let a = srv.addr;
    // What SGLang's own frontend (`sgl.gen`) sends: every field it knows, the unset ones as null
    // or [], the penalties at their neutral values.
    let frontend = json!({"max_new_tokens": 4, "min_new_tokens": 0, "n": 1, "stop": [], "stop_token_ids": [], "stop_regex": [],
        "temperature": 0.0, "top_p": 1.0, "top_k": -1, "min_p": 0.0, "frequency_penalty": 0.0, "presence_penalty": 0.0,
        "ignore_eos": false, "regex": null, "json_schema": null, "ebnf": null, "skip_special_tokens": true,
        "spaces_between_special_tokens": true, "no_stop_trim": false, "custom_params": null, "logit_bias": null});
    let r = post(a, "/generate", &json!({"text": "hi", "sampling_params": frontend})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["text"].is_string());
    for ok in [json!({"repetition_penalty": 1.0}), json!({"logit_bias": {}})] {
        let mut sp = ok.clone();
        sp["max_new_tokens"] = json!(4);
        let r = post(a, "/generate", &json!({"text": "hi", "sampling_params": sp})).await;
        assert_eq!(r.status, 200, "{ok}: {}", r.text());
    }
    // Fields that change the result are type-checked (their effects: tests/server_sampling.rs).
    let cases: Vec<(Value, &str)> = vec![
        (json!({"presence_penalty": "x"}), "sampling_params.presence_penalty must be a number"),
        (json!({"logit_bias": 5}), "sampling_params.logit_bias must be an object"),
        (json!({"logit_bias": {"5": "up"}}), "sampling_params.logit_bias.5 must be a number"),
        (json!({"regex": "a+"}), "sampling_params.regex is not supported by dllm (constrained decoding)"),
        (json!({"json_schema": "{}"}), "sampling_params.json_schema is not supported"),
        (json!({"ebnf": "root ::= \"a\""}), "sampling_params.ebnf is not supported"),
    ];
    for (sp, needle) in cases {
        let r = post(a, "/generate", &json!({"text": "hi", "sampling_params": sp})).await;
        assert_error(&r, 400, needle);
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_named_by_their_folder_and_unknown_models_are_404() {
    let srv = serve(&["--threshold", "0"]).await;
    let a = srv.addr;
    let name = model_dir().file_name().unwrap().to_string_lossy().into_owned();
    let m = get(a, "/v1/models").await.json();
    assert_eq!(m["data"][0]["id"], json!(name), "the folder's name, not the server's path");
    let one = get(a, &format!("/v1/models/{name}")).await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["id"], json!(name));
    assert_eq!(one.json()["object"], "model");
    assert_error(&get(a, "/v1/models/gpt-4").await, 404, "The model `gpt-4` does not exist");
    let body = |model: &str| json!({"model": model, "prompt": "hi", "max_tokens": 4, "temperature": 0});
    assert_error(&post(a, "/v1/completions", &body("gpt-4")).await, 404, "does not exist");
    let chat = json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    assert_error(&post(a, "/v1/chat/completions", &chat).await, 404, "does not exist");
    let r = post(a, "/v1/completions", &body(&name)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], json!(name));
    // SGLang's tools pass their own request id; /generate echoes it.
    let r = post(a, "/generate", &json!({"text": "hi", "rid": "my-request-7", "sampling_params": {"max_new_tokens": 4}})).await;
    assert_eq!(r.json()["meta_info"]["id"], "my-request-7");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unseeded_requests_sample_afresh_and_report_their_seed() {
    let sampled = |seed: Option<u64>| {
        let mut sp = json!({"temperature": 1.0, "max_new_tokens": 16});
        if let Some(s) = seed {
            sp["sampling_seed"] = json!(s);
        }
        json!({"text": "hi", "sampling_params": sp})
    };
    let srv = serve(&["--threshold", "0"]).await;
    let a = srv.addr;
    let first = post(a, "/generate", &sampled(None)).await.json();
    let second = post(a, "/generate", &sampled(None)).await.json();
    let seed = first["meta_info"]["sampling_seed"].as_u64().expect("meta_info.sampling_seed");
    assert_ne!(second["meta_info"]["sampling_seed"].as_u64(), Some(seed), "each unseeded request draws its own seed");
    // The reported seed replays the request exactly; a given seed is kept.
    let replay = post(a, "/generate", &sampled(Some(seed))).await.json();
    assert_eq!(replay["meta_info"]["sampling_seed"].as_u64(), Some(seed));
    assert_eq!(replay["output_ids"], first["output_ids"]);
    srv.shutdown().await;
    // --random-seed makes the drawn seeds themselves reproducible.
    let mut runs = vec![];
    for _ in 0..2 {
        let srv = serve(&["--threshold", "0", "--random-seed", "7"]).await;
        let r = post(srv.addr, "/generate", &sampled(None)).await.json();
        runs.push(r["meta_info"]["sampling_seed"].clone());
        srv.shutdown().await;
    }
    assert_eq!(runs[0], runs[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_request_ends_running_requests_and_frees_them() {
    let srv = serve(&[]).await;
    let a = srv.addr;
    // Thousands of one-token steps (threshold 1 never passes: the quota of one per step decides).
    let long =
        |rid: &str| json!({"text": "hi", "rid": rid, "sampling_params": {"max_new_tokens": 3900, "threshold": 1.0, "temperature": 0}});
    let one = tokio::spawn(async move { post(a, "/generate", &long("long-1")).await });
    wait_metric(a, "dllm:num_running_reqs", |v| v >= 1.0).await;
    let r = post(a, "/abort_request", &json!({"rid": "long-1"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["aborted"], 1);
    let out = one.await.unwrap();
    assert_eq!(out.status, 200, "{}", out.text());
    let v = out.json();
    assert_eq!(v["meta_info"]["id"], "long-1");
    assert_eq!(v["meta_info"]["finish_reason"]["type"], "abort", "{v}");
    assert!(v["output_ids"].as_array().unwrap().len() < 3900);
    wait_metric(a, "dllm:num_running_reqs", |v| v == 0.0).await;

    // abort_all ends every running request, streamed ones too (their final event, then [DONE]).
    let two = tokio::spawn(async move { post(a, "/generate", &long("long-2")).await });
    let three = tokio::spawn(async move {
        let mut body = long("long-3");
        body["stream"] = json!(true);
        post(a, "/generate", &body).await
    });
    wait_metric(a, "dllm:num_running_reqs", |v| v >= 2.0).await;
    assert_eq!(post(a, "/abort_request", &json!({"abort_all": true})).await.json()["aborted"], 2);
    assert_eq!(two.await.unwrap().json()["meta_info"]["finish_reason"]["type"], "abort");
    let ev = three.await.unwrap().events();
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    let last: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
    assert_eq!(last["meta_info"]["finish_reason"]["type"], "abort");
    wait_metric(a, "dllm:num_running_reqs", |v| v == 0.0).await;

    // Unknown ids are no error; bad bodies are; the server keeps serving.
    assert_eq!(post(a, "/abort_request", &json!({"rid": "nobody"})).await.json()["aborted"], 0);
    assert_error(&post(a, "/abort_request", &json!({})).await, 400, "rid");
    assert_error(&post(a, "/abort_request", &json!({"rid": 5})).await, 400, "rid must be");
    let r = post(a, "/generate", &json!({"text": "hi", "sampling_params": {"max_new_tokens": 4}})).await;
    assert_eq!(r.status, 200);
    srv.shutdown().await;
}

#[test]
fn the_cli_checks_a_request_as_the_server_does() {
    for (flags, needle) in [
        (&["--steps", "0"][..], "steps must be between 1 and the block size"),
        (&["--steps", "100"][..], "steps must be between 1 and the block size (32), got 100"),
        (&["--threshold", "5"][..], "threshold must be in [0, 1]"),
        (&["--temperature", "-1"][..], "temperature must be a finite number >= 0"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dllm"))
            .args(["generate", "--device", "cpu", "--model-path", model_dir().to_str().unwrap(), "--max-new-tokens", "4"])
            .args(flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle), "{flags:?}: {err}");
    }
}

#[test]
fn the_embedded_model_says_its_weights_are_random() {
    let cache = std::env::temp_dir().join(format!("dllm-cli-default-{}", std::process::id()));
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dllm"))
            .args(["generate", "--device", "cpu", "--max-new-tokens", "4"])
            .args(extra)
            .env("DLLM_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("weights are random") && err.contains("--model-path"), "{err}");
    // With a checkpoint given, no such note.
    let out = run(&["--model-path", model_dir().to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("weights are random"));
    let _ = std::fs::remove_dir_all(&cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_answers_503_and_ends_streams_with_their_last_event() {
    let srv = serve(&[]).await;
    let a = srv.addr;
    let long = |stream: bool| json!({"text": "hi", "stream": stream, "sampling_params": {"max_new_tokens": 3900, "threshold": 1.0, "temperature": 0}});
    let plain = tokio::spawn(async move { post(a, "/generate", &long(false)).await });
    let streamed = tokio::spawn(async move { post(a, "/generate", &long(true)).await });
    wait_metric(a, "dllm:num_running_reqs", |v| v >= 2.0).await;
    srv.shutdown().await;
    // A request cut by shutdown is the server's unavailability (retry elsewhere), not a failure.
    assert_error(&plain.await.unwrap(), 503, "shutting down");
    let ev = streamed.await.unwrap().events();
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"), "{ev:?}");
    let last: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
    assert!(last.to_string().contains("shutting down"), "{last}");
}
