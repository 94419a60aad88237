//! Careless and hostile bodies on every generation route, seeded: valid requests with fields
//! replaced by values of the wrong kind or out of range, fields removed, prompts and messages of
//! every wrong shape, and bodies cut short or of random bytes. Each must get an answer below 500
//! (a 4xx, or the generation), and the server must keep serving. The real server on a loopback
//! port with the tiny model; outputs are capped so the accepted ones finish quickly.

mod http_client;
use dllm::rng::Rng;
use http_client::*;
use serde_json::{json, Map, Value};

/// Values of every kind, and numbers at the edges of every range a field has.
fn odd_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(false),
        json!(0),
        json!(-1),
        json!(1),
        json!(2),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(2147483648u64),
        json!(1.5),
        json!(-0.5),
        json!(1e308),
        json!(-1e308),
        json!(1e-45),
        json!(""),
        json!("x"),
        json!("\u{0}"),
        json!("9".repeat(40)),
        json!([]),
        json!({}),
        json!([1, 2]),
        json!([-1]),
        json!([u32::MAX]),
        json!([[]]),
        json!([null]),
        json!(["a", 1]),
        json!({"a": 1}),
        json!({"type": "text"}),
        json!({"format": {"type": "json_object"}}),
    ]
}

/// Prompts, messages and inputs of every wrong shape (and some right ones).
fn odd_prompts() -> Vec<Value> {
    vec![
        json!(""),
        json!("hi"),
        json!("a".repeat(9000)),
        json!("é中".repeat(50)),
        json!("<|role_end|>".repeat(8)),
        json!([]),
        json!(["a", "b"]),
        json!([[]]),
        json!([1, 2, 3]),
        json!([[1, 2], [3]]),
        json!([-1]),
        json!([157183]),
        json!([999999999]),
        json!([1.5]),
        json!([{}]),
        json!([{"role": "user"}]),
        json!([{"role": "user", "content": null}]),
        json!([{"role": 5, "content": "x"}]),
        json!([{"role": "user", "content": [{"type": "text"}]}]),
        json!([{"role": "user", "content": [{"type": "input_text", "text": 5}]}]),
        json!([{"role": "user", "content": [{"type": "image_url"}]}]),
        json!([{"type": "function_call_output", "output": "x"}]),
        json!([{"role": "assistant", "content": "x"}]),
        json!([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]),
        json!(5),
        json!({"role": "user", "content": "x"}),
    ]
}

struct Route {
    path: &'static str,
    base: Value,
    /// The field holding the prompt.
    prompt: &'static str,
    /// Its fields, the sampling ones among them.
    fields: &'static [&'static str],
    /// The field limiting the output (capped in every request sent).
    limit: &'static str,
}

const SAMPLING: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "stop_token_ids",
    "n",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "min_new_tokens",
    "ignore_eos",
    "logit_bias",
    "regex",
    "json_schema",
    "threshold",
    "block_length",
    "steps",
    "skip_special_tokens",
    "stop_regex",
];

fn routes() -> Vec<Route> {
    vec![
        Route {
            path: "/generate",
            base: json!({"text": "hi", "sampling_params": {"max_new_tokens": 4, "temperature": 0}}),
            prompt: "text",
            fields: &["text", "input_ids", "sampling_params", "stream", "rid", "return_logprob", "logprob_start_len", "image_data"],
            limit: "max_new_tokens",
        },
        Route {
            path: "/v1/completions",
            base: json!({"prompt": "hi", "max_tokens": 4, "temperature": 0}),
            prompt: "prompt",
            fields: &["prompt", "max_tokens", "stream", "stream_options", "logprobs", "echo", "suffix", "best_of", "model", "user"],
            limit: "max_tokens",
        },
        Route {
            path: "/v1/chat/completions",
            base: json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}),
            prompt: "messages",
            fields: &[
                "messages",
                "max_tokens",
                "max_completion_tokens",
                "stream",
                "stream_options",
                "logprobs",
                "top_logprobs",
                "tools",
                "tool_choice",
                "response_format",
                "chat_template_kwargs",
                "model",
            ],
            limit: "max_tokens",
        },
        Route {
            path: "/v1/responses",
            base: json!({"input": "hi", "max_output_tokens": 4, "temperature": 0}),
            prompt: "input",
            fields: &[
                "input",
                "instructions",
                "max_output_tokens",
                "stream",
                "stream_options",
                "text",
                "tools",
                "tool_choice",
                "previous_response_id",
                "background",
                "truncation",
                "top_logprobs",
                "store",
                "metadata",
                "model",
            ],
            limit: "max_output_tokens",
        },
    ]
}

/// The output limit kept small: a mutation may have set it to anything a number can be, or
/// removed it (chat and responses then generate what the context leaves).
fn cap(o: &mut Map<String, Value>, key: &str) {
    if o.get(key).is_none_or(|v| v.as_u64().is_some_and(|n| n > 8)) {
        o.insert(key.to_string(), json!(8));
    }
}

/// `route.base` with one to four mutations.
fn mutate(rng: &mut Rng, route: &Route, odd: &[Value], prompts: &[Value]) -> Value {
    let mut v = route.base.clone();
    let o = v.as_object_mut().unwrap();
    for _ in 0..1 + rng.next_u64() % 4 {
        let r = rng.uniform();
        if r < 0.3 {
            o.insert(rng.pick(route.fields).to_string(), rng.pick(odd).clone());
        } else if r < 0.5 {
            let key = rng.pick(SAMPLING).to_string();
            match o.get_mut("sampling_params") {
                Some(Value::Object(sp)) => sp.insert(key, rng.pick(odd).clone()),
                _ => o.insert(key, rng.pick(odd).clone()),
            };
        } else if r < 0.7 {
            o.insert(route.prompt.to_string(), rng.pick(prompts).clone());
        } else if r < 0.8 {
            let keys: Vec<String> = o.keys().cloned().collect();
            if !keys.is_empty() {
                o.remove(rng.pick(&keys));
            }
        } else {
            o.insert("stream".into(), json!(rng.uniform() < 0.7));
        }
    }
    match o.get_mut("sampling_params") {
        Some(Value::Object(sp)) => cap(sp, route.limit),
        Some(_) => {}
        None if route.path == "/generate" => {}
        None => cap(o, route.limit),
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutated_bodies_on_every_route_get_answers_below_500() {
    let srv = serve(&[]).await;
    let a = srv.addr;
    let (odd, prompts, routes) = (odd_values(), odd_prompts(), routes());
    let mut rng = Rng::new(2026);
    let (mut answered, mut refused) = (0, 0);
    for i in 0..960 {
        let route = &routes[i % routes.len()];
        let body = mutate(&mut rng, route, &odd, &prompts);
        let mut bytes = body.to_string().into_bytes();
        // One in twenty: cut short, or random bytes.
        if rng.uniform() < 0.05 {
            if rng.uniform() < 0.5 {
                bytes.truncate((rng.next_u64() % bytes.len() as u64) as usize);
            } else {
                bytes = (0..rng.next_u64() % 200).map(|_| rng.next_u64() as u8).collect();
            }
        }
        let r = request(a, "POST", route.path, &[], Some(&bytes)).await;
        assert!(r.status < 500, "{} {}: {} {}", route.path, String::from_utf8_lossy(&bytes), r.status, r.text());
        if r.status == 200 {
            answered += 1;
        } else {
            refused += 1;
            // An error has its body (OpenAI's shape, SGLang's message).
            assert!(r.json()["error"]["message"].is_string(), "{} {}: {}", route.path, String::from_utf8_lossy(&bytes), r.text());
        }
    }
    eprintln!("960 mutated bodies: {answered} answered, {refused} refused");
    // The mutations both keep and break requests, and the server still serves.
    assert!(answered > 40 && refused > 200, "{answered} answered, {refused} refused");
    assert_eq!(get(a, "/health").await.status, 200);
    let r = post(a, "/generate", &json!({"text": "hi", "sampling_params": {"max_new_tokens": 4}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
}
