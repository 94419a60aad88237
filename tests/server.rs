//! `dllm serve` end to end: the real server on a loopback port, the tiny model on the CPU
//! backend, spoken to over plain HTTP/1.1 (tests/http_client: no extra dependencies).
//! Most servers here run with `--threshold 0` (every mask of a block is decided in one step)
//! so debug builds stay fast; one test keeps the default threshold for a multi-step check.

use dllm::decode::Policy;
use dllm::engine::GenParams;
use dllm::runtime::{self, Device};
use dllm::server::{self, ServeArgs};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

mod http_client;
use http_client::*;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_generate_matches_engine_and_cli() {
    let srv = serve(&["--threshold", "0"]).await;
    let r = post(srv.addr, "/generate", &json!({"text": PROMPT, "sampling_params": {"temperature": 0, "max_new_tokens": 40}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();

    let mut m = runtime::load(&model_dir(), Device::Cpu).unwrap();
    let prompt = m.tokenizer.encode(PROMPT).unwrap();
    let params = GenParams { max_new_tokens: 40, policy: Policy::LowConfidence { threshold: 0.0 }, ..GenParams::default() };
    let out = m.engine.generate(prompt.clone(), params).unwrap();
    assert_eq!(v["output_ids"], json!(out.output_ids));
    assert_eq!(v["text"], json!(m.tokenizer.decode(&out.output_ids, true)));
    let meta = &v["meta_info"];
    assert_eq!(meta["prompt_tokens"], json!(prompt.len()));
    assert_eq!(meta["completion_tokens"], json!(out.output_ids.len()));
    assert_eq!(meta["denoising_steps"], json!(out.steps));
    assert!(meta["id"].is_string() && meta["e2e_latency"].is_number(), "{meta}");
    match out.finish {
        dllm::engine::Finish::Stop(t) => assert_eq!(meta["finish_reason"], json!({"type": "stop", "matched": t})),
        dllm::engine::Finish::Length => assert_eq!(meta["finish_reason"], json!({"type": "length", "length": 40})),
    }

    // The CLI prints the same.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_dllm"))
        .args(["generate", "--model-path", model_dir().to_str().unwrap(), "--prompt", PROMPT])
        .args(["--max-new-tokens", "40", "--threshold", "0", "--device", "cpu", "--json"])
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let c: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(c["output_ids"], v["output_ids"]);
    assert_eq!(c["text"], v["text"]);

    // input_ids give the same answer; a batch answers a list, in order; rid is echoed.
    let r = post(
        srv.addr,
        "/generate",
        &json!({"input_ids": prompt, "rid": "abc", "sampling_params": {"temperature": 0, "max_new_tokens": 40}}),
    )
    .await;
    assert_eq!(r.json()["output_ids"], v["output_ids"]);
    assert_eq!(r.json()["meta_info"]["id"], "abc");
    let r =
        post(srv.addr, "/generate", &json!({"text": [PROMPT, "Hello"], "sampling_params": {"temperature": 0, "max_new_tokens": 40}})).await;
    let list = r.json();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert_eq!(list[0]["output_ids"], v["output_ids"]);
    let hello = post(srv.addr, "/generate", &json!({"text": "Hello", "sampling_params": {"temperature": 0, "max_new_tokens": 40}})).await;
    assert_eq!(list[1]["output_ids"], hello.json()["output_ids"]);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_is_cumulative_and_matches_non_streaming() {
    // Default threshold here: blocks take several steps.
    let srv = serve(&["--diffusion-block-size", "8"]).await;
    let sp = json!({"temperature": 0, "max_new_tokens": 20, "ignore_eos": true});
    let whole = post(srv.addr, "/generate", &json!({"text": PROMPT, "sampling_params": sp})).await.json();
    let r = post(srv.addr, "/generate", &json!({"text": PROMPT, "sampling_params": sp, "stream": true})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let ev = r.events();
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"), "{ev:?}");
    let ev: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(ev.len(), 3, "one event per block of 8 for 20 tokens: {ev:?}");
    let mut prev: Vec<Value> = vec![];
    for (i, e) in ev.iter().enumerate() {
        let ids = e["output_ids"].as_array().unwrap().clone();
        assert!(ids.len() > prev.len() && ids[..prev.len()] == prev[..], "event {i} is not cumulative");
        assert_eq!(e["meta_info"]["completion_tokens"], json!(ids.len()));
        assert_eq!(e["meta_info"]["finish_reason"].is_null(), i + 1 < ev.len(), "{e}");
        prev = ids;
    }
    let last = ev.last().unwrap();
    assert_eq!(last["text"], whole["text"]);
    assert_eq!(last["output_ids"], whole["output_ids"]);
    assert_eq!(last["meta_info"]["finish_reason"], json!({"type": "length", "length": 20}));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_stop_ids_and_min_new_tokens() {
    let srv = serve(&["--threshold", "0"]).await;
    let base = post(
        srv.addr,
        "/generate",
        &json!({"text": "Hello", "sampling_params": {"temperature": 0, "max_new_tokens": 32, "ignore_eos": true}}),
    )
    .await
    .json();
    let ids: Vec<u32> = serde_json::from_value(base["output_ids"].clone()).unwrap();
    let text = base["text"].as_str().unwrap().to_string();
    // stop_token_ids: cut just after the first occurrence (kept), matched = the id.
    let t = ids[4];
    let first = ids.iter().position(|&x| x == t).unwrap();
    let r = post(
        srv.addr,
        "/generate",
        &json!({"text": "Hello", "sampling_params": {"temperature": 0, "max_new_tokens": 32, "ignore_eos": true, "stop_token_ids": [t]}}),
    )
    .await
    .json();
    assert_eq!(r["output_ids"], json!(ids[..=first]));
    assert_eq!(r["meta_info"]["finish_reason"], json!({"type": "stop", "matched": t}));
    // min_new_tokens: a stop id before it does not count.
    let r = post(srv.addr, "/generate", &json!({"text": "Hello", "sampling_params": {"temperature": 0, "max_new_tokens": 32, "ignore_eos": true, "stop_token_ids": [t], "min_new_tokens": first + 1}})).await.json();
    let later = ids.iter().skip(first + 1).position(|&x| x == t).map(|p| p + first + 1);
    match later {
        Some(p) => assert_eq!(r["output_ids"], json!(ids[..=p])),
        None => assert_eq!(r["output_ids"], json!(ids)),
    }
    // A stop string: the text ends before it.
    let piece = (0..text.len()).rev().find(|&i| text.is_char_boundary(i) && i > 0 && !text[i..].trim().is_empty()).unwrap();
    let stop: String = text[piece..].chars().take(1).collect();
    let at = text.find(&stop).unwrap();
    let r = post(
        srv.addr,
        "/generate",
        &json!({"text": "Hello", "sampling_params": {"temperature": 0, "max_new_tokens": 32, "ignore_eos": true, "stop": [stop]}}),
    )
    .await
    .json();
    assert_eq!(r["text"], json!(text[..at]), "{r}");
    assert_eq!(r["meta_info"]["finish_reason"], json!({"type": "stop", "matched": stop}));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_server_keeps_serving() {
    let srv = serve(&["--threshold", "0", "--max-body-bytes", "100000"]).await;
    let a = srv.addr;
    let raw = |s: &'static str| async move { request(a, "POST", "/generate", &[], Some(s.as_bytes())).await };
    assert_error(&raw("{not json").await, 400, "not valid JSON");
    assert_error(&raw("").await, 400, "empty");
    assert_error(&raw("[1, 2]").await, 400, "JSON object");
    let cases: Vec<(Value, &str)> = vec![
        (json!({"text": 5}), "text must be"),
        (json!({"text": "hi", "frobnicate": 1}), "frobnicate"),
        (json!({"text": "hi", "sampling_params": {"temprature": 0}}), "sampling_params.temprature"),
        (json!({"text": "hi", "sampling_params": {"temperature": "hot"}}), "sampling_params.temperature must be a number"),
        (json!({"text": "hi", "sampling_params": 3}), "sampling_params must be a JSON object"),
        (json!({"text": ""}), "text is empty"),
        (json!({"text": []}), "empty list"),
        (json!({"input_ids": []}), "input_ids is empty"),
        (json!({"input_ids": [1, "x"]}), "input_ids[1]"),
        (json!({"input_ids": [1, -3]}), "input_ids[1]"),
        (json!({"input_ids": [99999999]}), "outside the vocabulary"),
        (json!({"text": "hi", "input_ids": [1]}), "not both"),
        (json!({"sampling_params": {}}), "text or input_ids"),
        (json!({"text": "hi", "sampling_params": {"max_new_tokens": 0}}), "max_new_tokens must be at least 1"),
        (json!({"text": "hi", "sampling_params": {"max_new_tokens": 1_000_000_000_000u64}}), "exceeds the context length"),
        (json!({"text": "hi", "sampling_params": {"max_new_tokens": -5}}), "max_new_tokens must be >= 0"),
        (json!({"text": "hi", "sampling_params": {"max_new_tokens": 1.5}}), "must be a non-negative integer"),
        (json!({"text": "hi", "sampling_params": {"max_new_tokens": 4095}}), "exceeds the context length"),
        (json!({"input_ids": vec![5u32; 5000]}), "exceeds the context length"),
        (json!({"text": "hi", "sampling_params": {"block_size": 64}}), "block_size"),
        (json!({"text": "hi", "sampling_params": {"top_p": 0}}), "top_p"),
        (json!({"text": "hi", "sampling_params": {"temperature": -1}}), "temperature"),
        (json!({"text": "hi", "sampling_params": {"min_new_tokens": 9, "max_new_tokens": 8}}), "min_new_tokens"),
        (json!({"text": "hi", "sampling_params": {"regex": "a+"}}), "not supported"),
        (json!({"text": "hi", "return_logprob": "yes"}), "return_logprob must be true or false"),
        (json!({"text": "hi", "stream": "yes"}), "stream must be true or false"),
        (json!({"text": ["a", "b"], "sampling_params": [{}]}), "1 entries for 2 prompts"),
        (json!({"text": ["a", ""]}), "text[1] is empty"),
        (json!({"text": "hi", "model": 5}), "model must be a string"),
    ];
    for (body, needle) in cases {
        let r = post(a, "/generate", &body).await;
        assert_error(&r, 400, needle);
    }
    // Ignored SGLang fields are fine.
    let r = post(a, "/generate", &json!({"text": "hi", "return_logprob": false, "log_metrics": true, "sampling_params": {"max_new_tokens": 4, "frequency_penalty": 0.0, "n": 1}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The body SGLang's model gateway (sglang-router 0.3.2) forwards for {"text", "sampling_params"}.
    let gateway = json!({"text": "hi", "model": null, "sampling_params": {"max_new_tokens": 4}, "return_text_in_logprobs": false,
        "stream": false, "log_metrics": true, "return_hidden_states": false, "background": false, "no_logs": false,
        "return_bytes": false, "return_entropy": false});
    let r = post(a, "/generate", &gateway).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_error(&post(a, "/generate", &json!({"text": "hi", "model": "another-model"})).await, 404, "another-model");
    assert_error(&get(a, "/nope").await, 404, "/nope");
    assert_error(&get(a, "/generate").await, 405, "POST");
    let big = format!("{{\"text\": \"{}\"}}", "a".repeat(200_000));
    assert_error(&request(a, "POST", "/generate", &[], Some(big.as_bytes())).await, 413, "limit");
    let r = post(a, "/v1/completions", &json!({"prompt": "hi", "bogus": 1})).await;
    assert_error(&r, 400, "bogus");
    let r = post(a, "/v1/chat/completions", &json!({"messages": "hi"})).await;
    assert_error(&r, 400, "messages must be a list");
    let r =
        post(a, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]})).await;
    assert_error(&r, 400, "tools");
    // Still serving.
    assert_eq!(get(a, "/health").await.status, 200);
    let r = post(a, "/generate", &json!({"text": "hi", "sampling_params": {"max_new_tokens": 4}})).await;
    assert_eq!(r.status, 200);
    assert!(metric(a, "dllm:http_errors_total").await >= 30.0);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_required_when_set() {
    let srv = serve(&["--threshold", "0", "--api-key", "sekret", "--allowed-origins", "*"]).await;
    let a = srv.addr;
    let body = json!({"text": "hi", "sampling_params": {"max_new_tokens": 4}}).to_string();
    let r = request(a, "POST", "/generate", &[], Some(body.as_bytes())).await;
    assert_error(&r, 401, "missing API key");
    let r = request(a, "POST", "/generate", &[("Authorization", "Bearer nope")], Some(body.as_bytes())).await;
    assert_error(&r, 401, "invalid API key");
    let r = request(a, "POST", "/generate", &[("Authorization", "Bearer sekret")], Some(body.as_bytes())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_error(&get(a, "/v1/models").await, 401, "API key");
    assert_eq!(get(a, "/health").await.status, 200);
    assert_eq!(get(a, "/metrics").await.status, 200);
    // Browsers' CORS preflight (CORS is on here) needs no key.
    let r = request(a, "OPTIONS", "/generate", &[("Origin", "http://x"), ("Access-Control-Request-Method", "POST")], None).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_full_is_503_and_disconnects_cancel() {
    let srv = serve(&["--threshold", "0", "--max-running-requests", "1", "--max-queued-requests", "1"]).await;
    let a = srv.addr;
    let long = json!({"text": PROMPT, "stream": true, "sampling_params": {"max_new_tokens": 4000, "ignore_eos": true}});
    // One running (we saw a block), one queued (we saw the answer's head), the third refused.
    let (running, _) = open_stream(a, &long, 1).await;
    let (queued, seen) = open_stream(a, &long, 0).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert_eq!(metric(a, "dllm:num_queue_reqs").await, 1.0);
    // What load-aware routers read: both requests held, one waiting, both prompts' tokens.
    let prompt_tokens = srv.state.tokenizer.encode(PROMPT).unwrap().len();
    let load = get(a, "/get_load").await.json();
    assert_eq!(load, json!([{"dp_rank": 0, "num_reqs": 2, "num_waiting_reqs": 1, "num_tokens": 2 * prompt_tokens}]));
    let r = post(a, "/generate", &json!({"text": "hi", "sampling_params": {"max_new_tokens": 4}})).await;
    assert_error(&r, 503, "capacity");
    // Both clients leave: the queued one is dropped, the running one cancelled, cache freed.
    drop(queued);
    drop(running);
    wait_metric(a, "dllm:num_running_reqs", |v| v == 0.0).await;
    wait_metric(a, "dllm:num_queue_reqs", |v| v == 0.0).await;
    wait_metric(a, "dllm:num_requests_cancelled_total", |v| v >= 2.0).await;
    assert_eq!(metric(a, "dllm:num_requests_finished_total").await, 0.0);
    assert_eq!(get(a, "/get_load").await.json()[0]["num_tokens"], 0);
    // And it serves again.
    let r = post(a, "/generate", &json!({"text": "hi", "sampling_params": {"max_new_tokens": 4}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(srv.state.metrics.running.load(std::sync::atomic::Ordering::Relaxed), 0);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_a_non_streaming_request_cancels_it() {
    let srv = serve(&["--threshold", "0"]).await;
    let a = srv.addr;
    let body = json!({"text": "hi", "sampling_params": {"max_new_tokens": 4000, "ignore_eos": true}}).to_string();
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(head("POST", "/generate", &[], Some(body.len())).as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    wait_metric(a, "dllm:num_running_reqs", |v| v == 1.0).await;
    drop(s);
    wait_metric(a, "dllm:num_requests_cancelled_total", |v| v == 1.0).await;
    assert_eq!(metric(a, "dllm:num_running_reqs").await, 0.0);
    assert_eq!(metric(a, "dllm:num_requests_finished_total").await, 0.0);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_clients_all_get_complete_answers() {
    let srv = serve(&["--threshold", "0", "--diffusion-block-size", "8", "--max-running-requests", "16"]).await;
    let a = srv.addr;
    let mut tasks = vec![];
    for i in 0..64 {
        tasks.push(tokio::spawn(async move {
            let stream = i % 2 == 1;
            let body = json!({"text": format!("Question number {i}?"), "stream": stream, "sampling_params": {"temperature": 0, "max_new_tokens": 12, "ignore_eos": true}});
            let r = post(a, "/generate", &body).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let v: Value = if stream {
                let ev = r.events();
                assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
                serde_json::from_str(&ev[ev.len() - 2]).unwrap()
            } else {
                r.json()
            };
            assert_eq!(v["meta_info"]["completion_tokens"], 12, "{v}");
            assert_eq!(v["meta_info"]["finish_reason"]["type"], "length");
            v["output_ids"].clone()
        }));
    }
    let mut outs = vec![];
    for t in tasks {
        outs.push(t.await.unwrap());
    }
    // Batched with others or alone, a greedy request gets the same tokens.
    let alone = post(
        a,
        "/generate",
        &json!({"text": "Question number 5?", "sampling_params": {"temperature": 0, "max_new_tokens": 12, "ignore_eos": true}}),
    )
    .await
    .json();
    assert_eq!(outs[5], alone["output_ids"]);
    assert_eq!(metric(a, "dllm:num_requests_finished_total").await, 65.0);
    assert!(metric(a, "dllm:step_batch_size_count").await > 0.0);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_routes_have_openai_shapes() {
    let srv = serve(&["--threshold", "0", "--served-model-name", "llada2-tiny"]).await;
    let a = srv.addr;
    let m = get(a, "/v1/models").await.json();
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], "llada2-tiny");
    assert_eq!(m["data"][0]["object"], "model");

    let native = post(a, "/generate", &json!({"text": "Hello", "sampling_params": {"temperature": 0, "max_new_tokens": 16}})).await.json();
    let c =
        post(a, "/v1/completions", &json!({"model": "llada2-tiny", "prompt": "Hello", "max_tokens": 16, "temperature": 0})).await.json();
    assert_eq!(c["object"], "text_completion");
    assert!(c["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(c["model"], "llada2-tiny");
    assert_eq!(c["choices"][0]["text"], native["text"]);
    assert!(["stop", "length"].contains(&c["choices"][0]["finish_reason"].as_str().unwrap()));
    assert_eq!(c["usage"]["completion_tokens"], native["meta_info"]["completion_tokens"]);
    assert_eq!(c["usage"]["prompt_tokens"], native["meta_info"]["prompt_tokens"]);
    let total = c["usage"]["prompt_tokens"].as_u64().unwrap() + c["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(c["usage"]["total_tokens"], total);

    let r = post(
        a,
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 16, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    let ev = r.events();
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(json!(text), native["text"]);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], total);
    assert!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"].is_string());

    let msgs = json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "Why?"}]);
    // The tiny checkpoint carries LLaDA2's template.
    let templ = "<role>SYSTEM</role>be brief<|role_end|><role>HUMAN</role>Why?<|role_end|><role>ASSISTANT</role>";
    let native = post(a, "/generate", &json!({"text": templ, "sampling_params": {"temperature": 0, "max_new_tokens": 16}})).await.json();
    let c = post(a, "/v1/chat/completions", &json!({"model": "llada2-tiny", "messages": msgs, "max_tokens": 16, "temperature": 0}))
        .await
        .json();
    assert_eq!(c["object"], "chat.completion");
    assert!(c["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(c["choices"][0]["message"]["role"], "assistant");
    assert_eq!(c["choices"][0]["message"]["content"], native["text"]);
    assert_eq!(c["usage"]["prompt_tokens"], native["meta_info"]["prompt_tokens"]);

    let r = post(a, "/v1/chat/completions", &json!({"messages": msgs, "max_tokens": 16, "temperature": 0, "stream": true})).await;
    let ev = r.events();
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(json!(text), native["text"]);
    assert!(chunks.last().unwrap()["choices"][0]["finish_reason"].is_string());
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_stream_with_an_index_and_stop_strings_end_streams() {
    let srv = serve(&["--threshold", "0", "--diffusion-block-size", "8"]).await;
    let a = srv.addr;
    let sp = json!({"temperature": 0, "max_new_tokens": 16, "ignore_eos": true});
    let whole = post(a, "/generate", &json!({"text": ["Hello", "Why?"], "sampling_params": sp})).await.json();
    let r = post(a, "/generate", &json!({"text": ["Hello", "Why?"], "sampling_params": sp, "stream": true, "rid": ["r0", "r1"]})).await;
    let ev = r.events();
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    let ev: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    for i in 0..2 {
        let mine: Vec<&Value> = ev.iter().filter(|e| e["index"] == i).collect();
        assert!(mine.len() >= 2, "16 tokens in blocks of 8 take at least two events (prompt {i})");
        let last = mine.last().unwrap();
        assert_eq!(last["output_ids"], whole[i]["output_ids"]);
        assert_eq!(last["meta_info"]["id"], format!("r{i}"));
    }
    // A stop string inside the first block ends the stream there.
    let text = whole[0]["text"].as_str().unwrap();
    if let Some(c) = text.chars().find(|c| !c.is_whitespace() && *c != '\u{fffd}') {
        let stop = c.to_string();
        let r = post(a, "/generate", &json!({"text": "Hello", "sampling_params": {"temperature": 0, "max_new_tokens": 16, "ignore_eos": true, "stop": stop}, "stream": true})).await;
        let ev = r.events();
        let last: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
        assert_eq!(last["meta_info"]["finish_reason"], json!({"type": "stop", "matched": stop}));
        assert_eq!(last["text"], json!(&text[..text.find(c).unwrap()]));
    }
    // OpenAI completions take a list of prompts: one choice each, in order.
    let c = post(a, "/v1/completions", &json!({"prompt": ["Hello", "Why?"], "max_tokens": 16, "temperature": 0, "ignore_eos": true}))
        .await
        .json();
    assert_eq!(c["choices"][0]["text"], whole[0]["text"]);
    assert_eq!(c["choices"][1]["text"], whole[1]["text"]);
    assert_eq!(c["choices"][1]["index"], 1);
    assert_eq!(c["usage"]["completion_tokens"], 32);
    srv.shutdown().await;
}

/// The events of a finished SSE reply, `[DONE]` dropped, as JSON.
fn event_values(r: &Reply) -> Vec<Value> {
    let ev = r.events();
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_string_across_two_blocks_never_reaches_a_stream() {
    // A stop string whose first characters end one block and whose last begins the next: the
    // first block's update must not stream those characters, which the answer trims.
    let srv = serve(&["--threshold", "0", "--diffusion-block-size", "8"]).await;
    let a = srv.addr;
    let mut checked = 0;
    for prompt in ["Why?", "Hello", "abc", "The", "Tell me a story"] {
        let sp = json!({"temperature": 0, "max_new_tokens": 24, "ignore_eos": true});
        let texts: Vec<String> = event_values(&post(a, "/generate", &json!({"text": prompt, "sampling_params": sp, "stream": true})).await)
            .iter()
            .map(|e| e["text"].as_str().unwrap().to_string())
            .collect();
        let (first, full) = (texts[0].trim_end_matches('\u{fffd}'), texts.last().unwrap());
        let Some(next) = full.strip_prefix(first).and_then(|rest| rest.chars().next()) else { continue };
        // The first block's last character and the next one, where they first stand together.
        let Some(last) = first.chars().last() else { continue };
        let stop = format!("{last}{next}");
        if full.find(&stop) != Some(first.len() - last.len_utf8()) {
            continue;
        }
        let sp = json!({"temperature": 0, "max_new_tokens": 24, "ignore_eos": true, "stop": stop});
        let whole = post(a, "/generate", &json!({"text": prompt, "sampling_params": sp})).await.json();
        let answer = whole["text"].as_str().unwrap();
        assert_eq!(answer, &first[..first.len() - last.len_utf8()], "{prompt:?}, stop {stop:?}");
        let streamed = event_values(&post(a, "/generate", &json!({"text": prompt, "sampling_params": sp, "stream": true})).await);
        for e in &streamed {
            let t = e["text"].as_str().unwrap();
            assert!(answer.starts_with(t.trim_end_matches('\u{fffd}')), "{prompt:?}, stop {stop:?}: streamed {t:?}, answered {answer:?}");
        }
        assert_eq!(streamed.last().unwrap()["text"], whole["text"]);
        let body = json!({"prompt": prompt, "max_tokens": 24, "temperature": 0, "ignore_eos": true, "stop": stop, "stream": true});
        let deltas: String =
            event_values(&post(a, "/v1/completions", &body).await).iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
        assert_eq!(deltas, answer, "{prompt:?}, stop {stop:?}: the OpenAI stream's deltas");
        checked += 1;
    }
    assert!(checked > 0, "no prompt's output had a stop string across its first two blocks");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_health_and_metrics_endpoints() {
    let srv = serve(&["--threshold", "0", "--max-running-requests", "3"]).await;
    let a = srv.addr;
    assert_eq!(get(a, "/health").await.status, 200);
    assert_eq!(get(a, "/health_generate").await.status, 200);
    let mi = get(a, "/get_model_info").await.json();
    assert_eq!(mi["is_generation"], true);
    assert_eq!(mi["model_path"], json!(model_dir()));
    let si = get(a, "/get_server_info").await.json();
    assert_eq!(si["max_running_requests"], 3);
    assert_eq!(si["dllm_algorithm"], "LowConfidence");
    assert!(si["internal_states"][0]["num_running_reqs"].is_number(), "{si}");
    assert_eq!(get(a, "/server_info").await.json()["max_running_requests"], 3);
    assert_eq!(post(a, "/flush_cache", &json!({})).await.status, 200);
    let r = post(a, "/generate", &json!({"text": "hi", "sampling_params": {"max_new_tokens": 8, "ignore_eos": true}})).await;
    assert_eq!(r.status, 200);
    let m = get(a, "/metrics").await;
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = m.text();
    for name in [
        "dllm:num_requests_total",
        "dllm:prompt_tokens_total",
        "dllm:generation_tokens_total",
        "dllm:denoising_steps_total",
        "dllm:tokens_per_step",
        "dllm:num_queue_reqs",
        "dllm:num_running_reqs",
        "dllm:e2e_request_latency_seconds_bucket",
        "dllm:time_to_first_block_seconds_count",
        "dllm:step_duration_seconds_sum",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(metric(a, "dllm:generation_tokens_total").await >= 9.0);
    assert!(metric(a, "dllm:denoising_steps_total").await >= 2.0);
    // The CPU backend records no CUDA graphs: the counters are there, at 0.
    assert_eq!(metric(a, "dllm:cuda_graph_recordings_total").await, 0.0);
    assert_eq!(metric(a, "dllm:cuda_graph_replays_total").await, 0.0);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_prefill_gives_the_unchunked_answers() {
    // A budget of one block: the prompts' blocks are prefilled one forward each.
    let srv = serve(&["--threshold", "0", "--diffusion-block-size", "8", "--chunked-prefill-size", "8"]).await;
    let si = get(srv.addr, "/get_server_info").await.json();
    assert_eq!(si["chunked_prefill_size"], 8);
    let sp = json!({"temperature": 0, "max_new_tokens": 24});
    let r = post(srv.addr, "/generate", &json!({"text": [PROMPT, "Hello there"], "sampling_params": sp})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();

    let mut m = runtime::load(&model_dir(), Device::Cpu).unwrap();
    m.engine.set_max_forward_tokens(usize::MAX);
    let params = GenParams { max_new_tokens: 24, block_size: 8, policy: Policy::LowConfidence { threshold: 0.0 }, ..GenParams::default() };
    for (i, text) in [PROMPT, "Hello there"].iter().enumerate() {
        let prompt = m.tokenizer.encode(text).unwrap();
        let out = m.engine.generate(prompt, params.clone()).unwrap();
        assert_eq!(list[i]["output_ids"], json!(out.output_ids), "prompt {i}");
    }
    srv.shutdown().await;

    // The CLI takes the flag too, -1 included.
    for size in ["8", "-1"] {
        let cli = std::process::Command::new(env!("CARGO_BIN_EXE_dllm"))
            .args(["generate", "--model-path", model_dir().to_str().unwrap(), "--prompt", PROMPT, "--block-size", "8"])
            .args(["--max-new-tokens", "24", "--threshold", "0", "--device", "cpu", "--json", "--chunked-prefill-size", size])
            .output()
            .unwrap();
        assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
        let c: Value = serde_json::from_slice(&cli.stdout).unwrap();
        assert_eq!(c["output_ids"], list[0]["output_ids"], "--chunked-prefill-size {size}");
    }
}

/// SGLang's CUDA-graph flags: `--cuda-graph-bs` lists sizes, whose largest caps the graphed
/// steps as `--cuda-graph-max-bs` does (and replaces it, as in SGLang); `--disable-cuda-graph`
/// wins over both.
#[test]
fn cuda_graph_flags_resolve_as_sglang_resolves_them() {
    let max_bs = |extra: &[&str]| {
        let mut a = vec!["serve"];
        a.extend_from_slice(extra);
        ServeArgs::parse_from(a).unwrap().load.graphs.max_bs()
    };
    assert_eq!(max_bs(&[]), dllm::backend::DEFAULT_CUDA_GRAPH_MAX_BS);
    assert_eq!(max_bs(&["--cuda-graph-max-bs", "32"]), 32);
    assert_eq!(max_bs(&["--cuda-graph-bs", "1", "2", "4", "8", "--port", "8188"]), 8);
    assert_eq!(max_bs(&["--cuda-graph-max-bs", "32", "--cuda-graph-bs", "16", "1"]), 16);
    assert_eq!(max_bs(&["--disable-cuda-graph", "--cuda-graph-bs", "8"]), 0);
    let mut a = vec!["serve", "--cuda-graph-bs", "two"];
    assert!(ServeArgs::parse_from(a.drain(..)).is_err());
}

#[test]
fn flags_are_checked_at_startup() {
    let parse = |extra: &[&str]| {
        let mut a = vec!["serve"];
        a.extend_from_slice(extra);
        server::Settings::from_args(&ServeArgs::parse_from(a).unwrap())
    };
    // The guide's launch line (with one GPU's --tp-size) is accepted.
    let s = parse(&[
        "--host",
        "127.0.0.1",
        "--port",
        "8188",
        "--trust-remote-code",
        "--disable-cuda-graph",
        "--disable-radix-cache",
        "--mem-fraction-static",
        "0.9",
        "--attention-backend",
        "flashinfer",
        "--diffusion-algorithm",
        "LowConfidence",
        "--diffusion-block-size",
        "32",
        "--tp-size",
        "1",
        "--max-running-requests",
        "1",
    ])
    .unwrap();
    assert_eq!((s.port, s.block_size, s.max_running), (8188, 32, 1));
    // --chunked-prefill-size: SGLang's token budget per forward; -1 (any value <= 0) turns it off.
    assert_eq!(s.max_forward_tokens, dllm::engine::DEFAULT_CHUNKED_PREFILL);
    assert_eq!(parse(&["--chunked-prefill-size", "512"]).unwrap().max_forward_tokens, 512);
    assert_eq!(parse(&["--chunked-prefill-size", "-1"]).unwrap().max_forward_tokens, usize::MAX);
    assert_eq!(parse(&["--chunked-prefill-size", "0"]).unwrap().max_forward_tokens, usize::MAX);
    let err = |extra: &[&str]| format!("{:#}", parse(extra).unwrap_err());
    assert!(err(&["--diffusion-algorithm", "Greedy"]).contains("LowConfidence"));
    assert!(err(&["--dllm-algorithm", "Nope"]).contains("unknown diffusion algorithm"));
    assert!(err(&["--tp-size", "4"]).contains("--tp-size 4"));
    assert!(err(&["--threshold", "1.5"]).contains("threshold"));
    assert!(err(&["--diffusion-block-size", "0"]).contains("block-size"));
    assert!(err(&["--mem-fraction-static", "1.5"]).contains("mem-fraction"));
    assert!(err(&["--diffusion-algorithm", "LowConfidence", "--dllm-algorithm", "Other"]).contains("disagree"));
    assert!(err(&["--log-level", "loud"]).contains("log-level"));
    // --dtype: SGLang casts the weights to it; dllm runs them as stored (bf16), so only the
    // values that mean that are taken.
    for d in ["auto", "bfloat16"] {
        parse(&["--dtype", d]).unwrap();
    }
    for d in ["float16", "half", "float32", "float"] {
        assert!(err(&["--dtype", d]).contains("does not cast the weights"), "{d}");
    }
    assert!(err(&["--dtype", "int8"]).contains("is not a dtype"));

    let dir = std::env::temp_dir().join(format!("dllm-server-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let y = dir.join("algo.yaml");
    std::fs::write(&y, "threshold: 0.9\n").unwrap();
    let v20 = dllm::config::Family::Llada20;
    let s = parse(&["--dllm-algorithm", "LowConfidence", "--dllm-algorithm-config", y.to_str().unwrap()]).unwrap();
    assert_eq!(s.policy(v20, false).unwrap(), Policy::LowConfidence { threshold: 0.9 });
    let s = parse(&["--dllm-algorithm-config", y.to_str().unwrap(), "--threshold", "0.5"]).unwrap();
    assert_eq!(s.policy(v20, false).unwrap(), Policy::LowConfidence { threshold: 0.5 });
    std::fs::write(&y, "threshold: [oops\n").unwrap();
    assert!(err(&["--dllm-algorithm-config", y.to_str().unwrap()]).contains("not valid YAML"));
    std::fs::write(&y, "threshold: high\n").unwrap();
    assert!(err(&["--dllm-algorithm-config", y.to_str().unwrap()]).contains("threshold must be a number"));
    assert!(err(&["--dllm-algorithm-config", "/nonexistent.yaml"]).contains("reading"));
    assert!(ServeArgs::parse_from(["serve", "--no-such-flag"]).is_err());
}
