//! OpenAI's Responses API (`POST /v1/responses`) on the real server with the tiny model: the same
//! tokens as `/v1/chat/completions` for the same conversation, the response object's fields, the
//! stream's typed and numbered events, and the fields it refuses (nothing is stored).

mod http_client;
use http_client::*;
use serde_json::{json, Value};

/// The text of a response object's one message.
fn output_text(v: &Value) -> String {
    v["output"][0]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no output text in {v}")).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_response_is_the_chat_completion_of_its_conversation() {
    let srv = serve(&[]).await;
    let a = srv.addr;
    // instructions and a developer message are the template's system message; text parts of
    // either kind make one content.
    let chat = post(
        a,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}], "max_tokens": 32, "temperature": 0}),
    )
    .await;
    assert_eq!(chat.status, 200, "{}", chat.text());
    let chat = chat.json();
    let want = chat["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let inputs = [
        json!({"instructions": "Be brief.", "input": "Why?"}),
        json!({"input": [{"role": "developer", "content": "Be brief."}, {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Why?"}]}]}),
    ];
    for input in inputs {
        let mut body = json!({"max_output_tokens": 32, "temperature": 0});
        body.as_object_mut().unwrap().extend(input.as_object().unwrap().clone());
        let r = post(a, "/v1/responses", &body).await;
        assert_eq!(r.status, 200, "{input}: {}", r.text());
        let v = r.json();
        assert_eq!(output_text(&v), want, "{input}");
        assert_eq!(v["object"], "response");
        assert!(v["id"].as_str().unwrap().starts_with("resp_"), "{v}");
        assert_eq!(v["output"][0]["type"], "message");
        assert_eq!(v["output"][0]["role"], "assistant");
        assert_eq!(v["usage"]["input_tokens"], chat["usage"]["prompt_tokens"], "{v}");
        assert_eq!(v["usage"]["output_tokens"], chat["usage"]["completion_tokens"], "{v}");
        let (i, o) = (v["usage"]["input_tokens"].as_u64().unwrap(), v["usage"]["output_tokens"].as_u64().unwrap());
        assert_eq!(v["usage"]["total_tokens"], json!(i + o));
        // Cut at the limit: incomplete, and says why (chat's finish_reason "length").
        if chat["choices"][0]["finish_reason"] == "length" {
            assert_eq!(v["status"], "incomplete", "{v}");
            assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
            assert_eq!(v["output"][0]["status"], "incomplete");
        } else {
            assert_eq!(v["status"], "completed", "{v}");
        }
        assert_eq!(v["max_output_tokens"], 32);
        assert_eq!(v["temperature"], 0.0);
    }
    // A stop string ends it: completed.
    let r = post(a, "/v1/responses", &json!({"input": "Why?", "max_output_tokens": 64, "temperature": 0, "stop": ["."]})).await;
    let v = r.json();
    let stopped = post(
        a,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Why?"}], "max_tokens": 64, "temperature": 0, "stop": ["."]}),
    )
    .await
    .json();
    assert_eq!(output_text(&v), stopped["choices"][0]["message"]["content"].as_str().unwrap());
    let want_status = if stopped["choices"][0]["finish_reason"] == "stop" { "completed" } else { "incomplete" };
    assert_eq!(v["status"], want_status, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_response_is_its_numbered_events() {
    let srv = serve(&[]).await;
    let a = srv.addr;
    let body = json!({"input": "Why?", "max_output_tokens": 40, "temperature": 0});
    let whole = post(a, "/v1/responses", &body).await.json();
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = post(a, "/v1/responses", &streamed).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let raw = r.text();
    // Every event is named as its data's type; no [DONE] after the last.
    let frames: Vec<&str> = raw.split("\n\n").filter(|f| !f.is_empty()).collect();
    let events: Vec<Value> = frames
        .iter()
        .map(|f| {
            let (name, data) = f.split_once('\n').unwrap_or_else(|| panic!("an event without a name: {f:?}"));
            let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(name.strip_prefix("event: "), v["type"].as_str(), "{f}");
            v
        })
        .collect();
    assert!(!raw.contains("[DONE]"));
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let n = types.len();
    assert_eq!(types[..4], ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]);
    assert!(types[4..n - 4].iter().all(|t| *t == "response.output_text.delta"), "{types:?}");
    assert_eq!(types[n - 4..n - 1], ["response.output_text.done", "response.content_part.done", "response.output_item.done"]);
    let end = if whole["status"] == "completed" { "response.completed" } else { "response.incomplete" };
    assert_eq!(types[n - 1], end);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], json!(i), "{e}");
    }
    // The deltas make the text, which is the unstreamed response's; the last event holds it all.
    let text: String = events.iter().filter(|e| e["type"] == "response.output_text.delta").map(|e| e["delta"].as_str().unwrap()).collect();
    assert_eq!(text, output_text(&whole));
    assert_eq!(events[n - 4]["text"], json!(text));
    let last = &events[n - 1]["response"];
    assert_eq!(output_text(last), text);
    assert_eq!(last["usage"], whole["usage"]);
    assert_eq!(last["status"], whole["status"]);
    assert_eq!(events[0]["response"]["status"], "in_progress");
    assert_eq!(events[0]["response"]["id"], last["id"]);
    assert_eq!(events[0]["response"]["output"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_a_response_cannot_be_asked_for_is_a_400() {
    let srv = serve(&[]).await;
    let a = srv.addr;
    let cases = [
        (json!({"input": "hi", "previous_response_id": "resp_1"}), "stores no responses"),
        (json!({"input": "hi", "conversation": "conv_1"}), "stores no responses"),
        (json!({"input": "hi", "background": true}), "background"),
        (json!({"input": "hi", "tools": [{"type": "function", "name": "f"}]}), "tools is not supported"),
        (json!({"input": "hi", "tool_choice": "required"}), "no tool calling"),
        (json!({"input": "hi", "text": {"format": {"type": "json_schema", "schema": {}}}}), "text.format"),
        (json!({"input": "hi", "n": 2}), "one output"),
        (json!({"input": "hi", "truncation": "auto"}), "truncation"),
        (json!({"input": "hi", "top_logprobs": 3}), "top_logprobs"),
        (json!({"input": "hi", "frobnicate": 1}), "unknown field"),
        (json!({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}), "function_call_output"),
        (json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}), "input_image"),
        (json!({"input": [{"role": "tool", "content": "x"}]}), "role"),
        (json!({"input": []}), "input is empty"),
        (json!({"input": 5}), "input must be"),
        (json!({"max_output_tokens": 4}), "needs an input"),
        (json!({"input": "hi", "instructions": 3}), "instructions must be a string"),
    ];
    for (body, needle) in cases {
        let r = post(a, "/v1/responses", &body).await;
        assert_error(&r, 400, needle);
    }
    assert_error(&post(a, "/v1/responses", &json!({"model": "other", "input": "hi"})).await, 404, "does not exist");
    assert_error(&get(a, "/v1/responses").await, 405, "takes POST");
    // Fields that change nothing here are accepted.
    let ok = json!({"input": "hi", "max_output_tokens": 4, "store": true, "metadata": {"k": "v"}, "user": "u", "reasoning": {"effort": "low"},
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "text": {"format": {"type": "text"}}, "truncation": "disabled"});
    let r = post(a, "/v1/responses", &ok).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["metadata"], json!({"k": "v"}));
    // What SGLang's model gateway forwards for a plain request (its defaults filled in).
    let gateway = json!({"input": "hi", "max_output_tokens": 4, "model": null, "store": true, "stream": null, "temperature": 0.0,
        "top_p": 1.0, "priority": 0, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0});
    let r = post(a, "/v1/responses", &gateway).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The knobs echo as given (not as the f32 they became), and OpenAI's defaults where not given.
    let v = post(a, "/v1/responses", &json!({"input": "hi", "max_output_tokens": 4, "temperature": 0.7})).await.json();
    assert_eq!((v["temperature"].clone(), v["top_p"].clone()), (json!(0.7), json!(1.0)), "{v}");
}
