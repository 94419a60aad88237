//! Every route's stream tells the answer its plain reply gives, for random requests, seeded:
//! block sizes, lengths, temperatures with seeds, stop strings and stop tokens drawn from the
//! answer itself (so they do stop it, wherever the blocks split them), `min_new_tokens`,
//! `no_stop_trim`, `skip_special_tokens`, `n` and `logprobs`. `/generate`'s cumulative text only
//! grows and ends as the reply, alone or in a batch of prompts; the OpenAI routes' deltas (completions, chat, responses) add up
//! to their replies' texts, with the same finish reasons and logprobs.

mod http_client;
use dllm::rng::Rng;
use http_client::*;
use serde_json::{json, Value};
use std::net::SocketAddr;

/// The events of a finished SSE reply, `[DONE]` dropped, as JSON.
fn events(r: &Reply) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = r.events();
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"), "{}", r.text());
    ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect()
}

/// Up to two pieces of `text` (1 to 4 characters each, at drawn places), as stop strings.
fn stops_from(rng: &mut Rng, text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![];
    }
    (0..1 + rng.below(2))
        .map(|_| {
            let at = rng.below(chars.len());
            let len = (1 + rng.below(4)).min(chars.len() - at);
            chars[at..at + len].iter().collect()
        })
        .collect()
}

/// Whether a `/generate` stream's `events` tell `reply`: the text only grows, never past the
/// reply's, and the last event is the reply (text, tokens and finish reason).
fn tells(events: &[&Value], reply: &Value) -> Result<(), String> {
    let answer = reply["text"].as_str().unwrap();
    let mut before = "";
    for e in events {
        // A block may end inside a character: its text then ends in U+FFFD until the next.
        let t = e["text"].as_str().unwrap().trim_end_matches('\u{fffd}');
        if !t.starts_with(before) || !answer.starts_with(t) {
            return Err(format!("streamed {t:?} after {before:?}; the reply is {answer:?}"));
        }
        before = t;
    }
    let last = events.last().ok_or("no events")?;
    if last["text"] != reply["text"]
        || last["output_ids"] != reply["output_ids"]
        || last["meta_info"]["finish_reason"] != reply["meta_info"]["finish_reason"]
    {
        return Err(format!(
            "the stream ended at {} (ids {}, {}) against the reply's {} (ids {}, {})",
            last["text"],
            last["output_ids"],
            last["meta_info"]["finish_reason"],
            reply["text"],
            reply["output_ids"],
            reply["meta_info"]["finish_reason"]
        ));
    }
    Ok(())
}

/// One seeded case against the server at `a`.
async fn case(a: SocketAddr, seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let prompt = *rng.pick(&["Hello", "Why?", "abc", "The sky is", "Camus said ", "日本語で"]);
    let mut sp = json!({
        "max_new_tokens": *rng.pick(&[1, 3, 8, 17, 40]),
        "block_size": *rng.pick(&[1, 2, 4, 8, 32]),
        "temperature": *rng.pick(&[0.0, 0.0, 0.8]),
        "seed": rng.below(1000),
        "ignore_eos": rng.below(2) == 0,
        "skip_special_tokens": rng.below(4) != 0,
    });
    // The answer without stops, to draw stop strings it holds.
    let plain = post(a, "/generate", &json!({"text": prompt, "sampling_params": sp})).await.json();
    if rng.below(4) != 0 {
        sp["stop"] = json!(stops_from(&mut rng, plain["text"].as_str().unwrap()));
    }
    if rng.below(4) == 0 {
        sp["no_stop_trim"] = json!(true);
    }
    let ids = plain["output_ids"].as_array().unwrap();
    if rng.below(4) == 0 && !ids.is_empty() {
        sp["stop_token_ids"] = json!([ids[rng.below(ids.len())]]);
    }
    if rng.below(4) == 0 {
        sp["min_new_tokens"] = json!(rng.below(1 + sp["max_new_tokens"].as_u64().unwrap() as usize));
    }
    let what = format!("prompt {prompt:?}, sampling_params {sp}");

    let reply = post(a, "/generate", &json!({"text": prompt, "sampling_params": sp})).await.json();
    let streamed = events(&post(a, "/generate", &json!({"text": prompt, "sampling_params": sp, "stream": true})).await);
    tells(&streamed.iter().collect::<Vec<_>>(), &reply).map_err(|e| format!("{what}: /generate {e}"))?;

    // The same request on the OpenAI routes: completions (the same prompt) and chat.
    let mut body = json!({"prompt": prompt, "max_tokens": sp["max_new_tokens"]});
    let keys = [
        "block_size",
        "temperature",
        "seed",
        "ignore_eos",
        "skip_special_tokens",
        "stop",
        "no_stop_trim",
        "stop_token_ids",
        "min_new_tokens",
    ];
    for key in keys {
        if !sp[key].is_null() {
            body[key] = sp[key].clone();
        }
    }
    let mut completion = body.clone();
    let n = *rng.pick(&[1, 1, 2, 3]);
    completion["n"] = json!(n);
    if rng.below(2) == 0 {
        completion["logprobs"] = json!(0);
    }
    let c = post(a, "/v1/completions", &completion).await.json();
    if c["choices"][0]["text"] != reply["text"] {
        return Err(format!("{what}: /v1/completions answered {} where /generate answered {}", c["choices"][0]["text"], reply["text"]));
    }
    completion["stream"] = json!(true);
    let chunks = events(&post(a, "/v1/completions", &completion).await);
    for i in 0..n {
        let mine: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"].as_array()?.iter().find(|ch| ch["index"] == i)).collect();
        let deltas: String = mine.iter().filter_map(|ch| ch["text"].as_str()).collect();
        let finish = mine.iter().rev().find_map(|ch| ch["finish_reason"].as_str());
        let whole = &c["choices"][i];
        if deltas != whole["text"].as_str().unwrap() || finish != whole["finish_reason"].as_str() {
            return Err(format!("{what}, n {n}: /v1/completions choice {i} streamed {deltas:?} ({finish:?}), answered {whole}"));
        }
        // With `logprobs: 0` the chunks' tokens and logprobs add up to the reply's.
        if whole["logprobs"].is_null() {
            continue;
        }
        for key in ["tokens", "token_logprobs"] {
            let streamed: Vec<Value> = mine.iter().flat_map(|ch| ch["logprobs"][key].as_array().cloned().unwrap_or_default()).collect();
            if json!(streamed) != whole["logprobs"][key] {
                return Err(format!("{what}, n {n}: choice {i}'s streamed logprobs {key} {streamed:?} against {}", whole["logprobs"][key]));
            }
        }
    }

    body.as_object_mut().unwrap().remove("prompt");
    body["messages"] = json!([{"role": "user", "content": prompt}]);
    let chat = post(a, "/v1/chat/completions", &body).await.json();
    let content = chat["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    body["stream"] = json!(true);
    let chunks = events(&post(a, "/v1/chat/completions", &body).await);
    let deltas: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    let finish = chunks.iter().rev().find_map(|c| c["choices"][0]["finish_reason"].as_str());
    if deltas != content || finish != chat["choices"][0]["finish_reason"].as_str() {
        return Err(format!(
            "{what}: /v1/chat/completions streamed {deltas:?} ({finish:?}), answered {content:?} ({})",
            chat["choices"][0]["finish_reason"]
        ));
    }

    // The Responses API over the same conversation: its text deltas make the response's text.
    let mut resp = body.clone();
    let o = resp.as_object_mut().unwrap();
    for key in ["messages", "stream", "max_tokens"] {
        o.remove(key);
    }
    resp["input"] = json!(prompt);
    resp["max_output_tokens"] = sp["max_new_tokens"].clone();
    let r = post(a, "/v1/responses", &resp).await;
    if r.status != 200 {
        return Err(format!("{what}: /v1/responses answered {} {} to {resp}", r.status, r.text()));
    }
    let whole = r.json();
    let text = whole["output"][0]["content"][0]["text"].as_str().unwrap_or_default().to_string();
    if text != content {
        return Err(format!("{what}: /v1/responses answered {text:?} where chat answered {content:?}"));
    }
    resp["stream"] = json!(true);
    let r = post(a, "/v1/responses", &resp).await;
    if r.status != 200 {
        return Err(format!("{what}: the streamed /v1/responses answered {} {} to {resp}", r.status, r.text()));
    }
    // Its events are named (an `event:` line before each `data:` line).
    let streamed: Vec<Value> = r
        .text()
        .split("\n\n")
        .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let deltas: String =
        streamed.iter().filter(|e| e["type"] == "response.output_text.delta").filter_map(|e| e["delta"].as_str()).collect();
    let last = &streamed.last().unwrap()["response"];
    if deltas != text || last["status"] != whole["status"] {
        return Err(format!("{what}: /v1/responses streamed {deltas:?} ({}), answered {text:?} ({})", last["status"], whole["status"]));
    }

    // A batch of prompts in one /generate request: each index's events tell its own reply. (Its
    // draw comes last, so the seeds of ONCE_FAILED draw the cases they failed on.)
    let other = *rng.pick(&["Hi", "Why not?", "日本語で"]);
    let batch = json!({"text": [prompt, other], "sampling_params": sp});
    let replies = post(a, "/generate", &batch).await.json();
    if replies[0]["text"] != reply["text"] {
        return Err(format!("{what}: batched with {other:?} it answered {} alone {}", replies[0]["text"], reply["text"]));
    }
    let mut streamed_batch = batch.clone();
    streamed_batch["stream"] = json!(true);
    let streamed = events(&post(a, "/generate", &streamed_batch).await);
    for i in 0..2 {
        let mine: Vec<&Value> = streamed.iter().filter(|e| e["index"] == i).collect();
        tells(&mine, &replies[i]).map_err(|e| format!("{what}: batch index {i}: {e}"))?;
    }
    Ok(())
}

/// Cases a run draws (seeds 0..CASES), and seeds past them that once failed (with the draws as
/// they are): 1309 and 1430 drew a stop string of three U+FFFD that a block's partial character
/// completed spuriously, ending the tokens before the real match.
const CASES: u64 = 100;
const ONCE_FAILED: [u64; 2] = [1309, 1430];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_tells_its_replys_answer() {
    let srv = serve(&["--threshold", "0"]).await;
    let mut failures = vec![];
    for seed in (0..CASES).chain(ONCE_FAILED) {
        if let Err(e) = case(srv.addr, seed).await {
            failures.push(format!("case {seed}: {e}"));
        }
    }
    srv.shutdown().await;
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES as usize + ONCE_FAILED.len(), failures.join("\n"));
}
