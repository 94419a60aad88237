//! The sampling and output fields through HTTP: logit_bias, the penalties, min_p, logprobs
//! (SGLang's `return_logprob`, OpenAI's `logprobs`), `n` and `stop_regex`. Each is shown to
//! change the answer the way it promises, and bad values to be 400s.

mod http_client;
use dllm::backend::cpu::CpuBackend;
use dllm::backend::{Backend, StepBatch};
use dllm::checkpoint::Checkpoint;
use http_client::*;
use serde_json::{json, Value};

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// `/generate` on "Hello" with these sampling params over the defaults (greedy, 24 tokens, no EOS).
fn hello(extra: Value) -> Value {
    let mut sp = json!({"temperature": 0, "max_new_tokens": 24, "ignore_eos": true, "block_size": 8});
    for (k, v) in extra.as_object().unwrap() {
        sp[k] = v.clone();
    }
    json!({"text": "Hello", "sampling_params": sp})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logit_bias_penalties_and_min_p_change_the_output() {
    let srv = serve(&["--threshold", "0"]).await;
    let a = srv.addr;
    let base = post(a, "/generate", &hello(json!({}))).await.json();
    let base_ids = ids(&base["output_ids"]);

    // A large bias on one token id makes greedy decoding choose it everywhere.
    let t = (3..200u32).find(|t| !base_ids.contains(t)).unwrap();
    let r = post(a, "/generate", &hello(json!({"logit_bias": {t.to_string(): 100.0}}))).await.json();
    assert_eq!(ids(&r["output_ids"]), vec![t; 24], "{r}");
    // The same field through OpenAI's route.
    let r = post(a, "/v1/completions", &json!({"prompt": "Hello", "max_tokens": 8, "temperature": 0, "logit_bias": {t.to_string(): 100}}))
        .await
        .json();
    assert_eq!(r["usage"]["completion_tokens"], 8);
    let again = post(
        a,
        "/generate",
        &json!({"text": "Hello", "sampling_params": {"temperature": 0, "max_new_tokens": 8, "logit_bias": {t.to_string(): 100}}}),
    )
    .await
    .json();
    assert_eq!(r["choices"][0]["text"], again["text"]);
    assert_eq!(ids(&again["output_ids"]), vec![t; 8]);

    // The penalties read the tokens unmasked so far: over three blocks each changes the answer.
    for field in [
        json!({"repetition_penalty": 2.0}),
        json!({"presence_penalty": 2.0}),
        json!({"frequency_penalty": 2.0}),
        json!({"frequency_penalty": -2.0}),
    ] {
        let r = post(a, "/generate", &hello(field.clone())).await;
        assert_eq!(r.status, 200, "{field}: {}", r.text());
        assert_ne!(ids(&r.json()["output_ids"]), base_ids, "{field} changed nothing");
    }
    // A strong frequency penalty spreads the output over more distinct tokens than none does.
    let distinct = |v: &[u32]| v.iter().collect::<std::collections::BTreeSet<_>>().len();
    let spread = ids(&post(a, "/generate", &hello(json!({"frequency_penalty": 2.0}))).await.json()["output_ids"]);
    let clumped = ids(&post(a, "/generate", &hello(json!({"frequency_penalty": -2.0}))).await.json()["output_ids"]);
    assert!(distinct(&spread) > distinct(&clumped), "{spread:?} vs {clumped:?}");

    // min_p 1 keeps only the most likely token: sampling becomes greedy; without it, it is not.
    let sampled = |min_p: f64| hello(json!({"temperature": 1.0, "sampling_seed": 11, "min_p": min_p}));
    let r = post(a, "/generate", &sampled(1.0)).await.json();
    assert_eq!(ids(&r["output_ids"]), base_ids);
    let r = post(a, "/generate", &sampled(0.0)).await.json();
    assert_ne!(ids(&r["output_ids"]), base_ids, "temperature 1 on random weights should differ from greedy");

    // Bad values are 400s that name the field.
    let cases: Vec<(Value, &str)> = vec![
        (json!({"logit_bias": {"99999": 1.0}}), "logit_bias: token id 99999 is outside the vocabulary"),
        (json!({"logit_bias": {"abc": 1.0}}), "sampling_params.logit_bias: key \"abc\" is not a token id"),
        (json!({"logit_bias": {"-3": 1.0}}), "is not a token id"),
        (json!({"logit_bias": [1, 2]}), "logit_bias must be an object"),
        (json!({"logit_bias": {"5": "up"}}), "sampling_params.logit_bias.5 must be a number"),
        (json!({"repetition_penalty": -1.0}), "repetition_penalty must be in (0, 2], got -1"),
        (json!({"repetition_penalty": 0}), "repetition_penalty must be in (0, 2]"),
        (json!({"repetition_penalty": 3}), "repetition_penalty must be in (0, 2]"),
        (json!({"repetition_penalty": "big"}), "sampling_params.repetition_penalty must be a number"),
        (json!({"presence_penalty": 2.5}), "presence_penalty must be in [-2, 2]"),
        (json!({"frequency_penalty": true}), "sampling_params.frequency_penalty must be a number"),
        (json!({"min_p": 1.5}), "min_p must be in [0, 1]"),
        (json!({"min_p": "x"}), "sampling_params.min_p must be a number"),
    ];
    for (sp, needle) in cases {
        assert_error(&post(a, "/generate", &hello(sp)).await, 400, needle);
    }
    let r = post(a, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}], "presence_penalty": -9})).await;
    assert_error(&r, 400, "presence_penalty must be in [-2, 2]");
    srv.shutdown().await;
}

/// ln of the softmax maximum of each row: the logprob of a greedy pick.
fn ln_softmax_max(logits: &[f32], vocab: usize) -> Vec<f64> {
    logits
        .chunks(vocab)
        .map(|row| {
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            -row.iter().map(|&l| (l as f64 - m).exp()).sum::<f64>().ln()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_are_the_probability_each_token_had_when_unmasked() {
    let srv = serve(&["--threshold", "0"]).await;
    let a = srv.addr;
    // An 8-token prompt and one block of 8: with threshold 0 one forward unmasks all of it, so
    // each greedy logprob is ln(softmax max) of that forward's row, computed here on the host.
    let prompt: Vec<u32> = vec![40, 41, 42, 43, 44, 45, 46, 47];
    let body = json!({"input_ids": prompt, "return_logprob": true,
        "sampling_params": {"temperature": 0, "max_new_tokens": 8, "block_size": 8, "ignore_eos": true}});
    let v = post(a, "/generate", &body).await.json();
    let out = ids(&v["output_ids"]);
    let meta = &v["meta_info"];
    assert_eq!(meta["input_token_logprobs"], json!([]), "no input logprobs from a diffusion model");
    let lps = meta["output_token_logprobs"].as_array().unwrap();
    assert_eq!(lps.len(), out.len());
    let ck = Checkpoint::open(&model_dir()).unwrap();
    let mut cpu = CpuBackend::load(&ck).unwrap();
    let mask = dllm::tokenizer::Tokenizer::open(&model_dir(), &ck.config).unwrap().mask_id;
    let slot = cpu.alloc_seq(16).unwrap();
    let mut batch = StepBatch::default();
    let tokens: Vec<u32> = prompt.iter().copied().chain([mask; 8]).collect();
    batch.push(slot, 0, &tokens, 8);
    let logits = dllm::model::forward_logits(&mut cpu, &ck.config, &batch, &(8..16).collect::<Vec<_>>()).unwrap();
    let want = ln_softmax_max(&logits, ck.config.vocab_size);
    for (k, e) in lps.iter().enumerate() {
        let (lp, id) = (e[0].as_f64().unwrap(), e[1].as_u64().unwrap() as u32);
        assert_eq!(id, out[k]);
        assert!(e[2].is_null(), "no text unless return_text_in_logprobs");
        assert!(lp <= 0.0 && (lp - want[k]).abs() < 1e-4, "token {k}: {lp} vs ln(softmax max) {}", want[k]);
    }

    // Longer, multi-block: a zero bias (which changes nothing) routes the request through the
    // host logits; the answer and its logprobs are the fused pick's.
    let long = |extra: Value| {
        let mut b = hello(extra);
        b["return_logprob"] = json!(true);
        b["return_text_in_logprobs"] = json!(true);
        b
    };
    let fused = post(a, "/generate", &long(json!({}))).await.json();
    let host = post(a, "/generate", &long(json!({"logit_bias": {"5": 0.0}}))).await.json();
    assert_eq!(fused["output_ids"], host["output_ids"]);
    let lp = |v: &Value| -> Vec<f64> {
        v["meta_info"]["output_token_logprobs"].as_array().unwrap().iter().map(|e| e[0].as_f64().unwrap()).collect()
    };
    let (f, h) = (lp(&fused), lp(&host));
    assert_eq!(f.len(), 24);
    assert!(f.iter().zip(&h).all(|(x, y)| (x - y).abs() < 1e-4 && *x <= 0.0), "{f:?} vs {h:?}");
    assert!(fused["meta_info"]["output_token_logprobs"][0][2].is_string(), "return_text_in_logprobs gives each token's text");
    // Streamed: cumulative, like the text; the last event has them all.
    let mut sb = long(json!({}));
    sb["stream"] = json!(true);
    let ev = post(a, "/generate", &sb).await.events();
    let events: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(events.len() > 1, "one event per block");
    for e in &events {
        assert_eq!(e["meta_info"]["output_token_logprobs"].as_array().unwrap().len(), e["output_ids"].as_array().unwrap().len());
    }
    assert_eq!(lp(events.last().unwrap()), f);

    // OpenAI completions: logprobs 0 is the chosen tokens' logprobs, the same numbers.
    let c = json!({"prompt": "Hello", "max_tokens": 24, "temperature": 0, "ignore_eos": true, "block_size": 8, "logprobs": 0});
    let r = post(a, "/v1/completions", &c).await.json();
    let l = &r["choices"][0]["logprobs"];
    let got: Vec<f64> = l["token_logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!(got.iter().zip(&f).all(|(x, y)| (x - y).abs() < 1e-6) && got.len() == 24, "{got:?}");
    assert_eq!(l["tokens"].as_array().unwrap().len(), 24);
    let offs: Vec<u64> = l["text_offset"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert!(offs[0] == 0 && offs.windows(2).all(|w| w[0] <= w[1]), "{offs:?}");
    // Streamed, each chunk carries the logprobs of its new tokens.
    let mut cs = c.clone();
    cs["stream"] = json!(true);
    let ev = post(a, "/v1/completions", &cs).await.events();
    let streamed: Vec<f64> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .flat_map(|e| e["choices"][0]["logprobs"]["token_logprobs"].as_array().cloned().unwrap_or_default())
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(streamed, got);
    // Chat: logprobs true, content entries with token, logprob and bytes; streamed too.
    let chat =
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "temperature": 0, "logprobs": true, "top_logprobs": 0});
    let r = post(a, "/v1/chat/completions", &chat).await.json();
    let content = r["choices"][0]["logprobs"]["content"].as_array().unwrap().clone();
    assert_eq!(json!(content.len()), r["usage"]["completion_tokens"]);
    for e in &content {
        assert!(e["logprob"].as_f64().unwrap() <= 0.0 && e["token"].is_string() && e["bytes"].is_array(), "{e}");
    }
    let mut chs = chat.clone();
    chs["stream"] = json!(true);
    let ev = post(a, "/v1/chat/completions", &chs).await.events();
    let n: usize = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .map(|e| e["choices"][0]["logprobs"]["content"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(n, content.len());
    // No logprobs unless asked.
    let r = post(a, "/generate", &hello(json!({}))).await.json();
    assert!(r["meta_info"].get("output_token_logprobs").is_none());

    // What cannot be given honestly is refused.
    assert_error(&post(a, "/v1/completions", &json!({"prompt": "hi", "logprobs": 2})).await, 400, "logprobs = 2: only the chosen token's");
    let chat_top = json!({"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 3});
    assert_error(&post(a, "/v1/chat/completions", &chat_top).await, 400, "top_logprobs = 3");
    let chat_int = json!({"messages": [{"role": "user", "content": "hi"}], "logprobs": 1});
    assert_error(&post(a, "/v1/chat/completions", &chat_int).await, 400, "logprobs must be true or false");
    for (k, v, needle) in [
        ("logprob_start_len", json!(0), "input token logprobs are not available"),
        ("top_logprobs_num", json!(2), "top_logprobs_num"),
        ("token_ids_logprob", json!([5]), "token_ids_logprob"),
        ("return_logprob", json!(1), "return_logprob must be true or false"),
    ] {
        let mut b = json!({"text": "hi", "return_logprob": true});
        b[k] = v;
        assert_error(&post(a, "/generate", &b).await, 400, needle);
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_samples_are_independent_and_numbered() {
    let srv = serve(&["--threshold", "0"]).await;
    let a = srv.addr;
    let sampled = |n: usize, seed: u64| hello(json!({"temperature": 1.0, "sampling_seed": seed, "n": n}));
    // SGLang: n > 1 answers a list; sample j draws with seed + j, so it replays alone.
    let list = post(a, "/generate", &sampled(3, 7)).await.json();
    let list = list.as_array().unwrap_or_else(|| panic!("n = 3 answers a list: {list}")).clone();
    assert_eq!(list.len(), 3);
    for (j, r) in list.iter().enumerate() {
        assert_eq!(r["meta_info"]["sampling_seed"], json!(7 + j));
        let alone = post(a, "/generate", &sampled(1, 7 + j as u64)).await.json();
        assert_eq!(r["output_ids"], alone["output_ids"], "sample {j}");
    }
    assert_ne!(list[0]["output_ids"], list[1]["output_ids"], "independent samples");
    // A batch of two prompts, n = 2: four answers, prompt by prompt.
    let b = json!({"text": ["Hello", "Bye"], "sampling_params": {"temperature": 1.0, "sampling_seed": 3, "n": 2, "max_new_tokens": 8}});
    let r = post(a, "/generate", &b).await.json();
    assert_eq!(r.as_array().map(Vec::len), Some(4), "{r}");
    let bye =
        post(a, "/generate", &json!({"text": "Bye", "sampling_params": {"temperature": 1.0, "sampling_seed": 4, "max_new_tokens": 8}}))
            .await
            .json();
    assert_eq!(r[3]["output_ids"], bye["output_ids"]);
    // Streamed: each event carries its sample's index.
    let mut s = sampled(2, 7);
    s["stream"] = json!(true);
    let ev = post(a, "/generate", &s).await.events();
    let idx: std::collections::BTreeSet<u64> =
        ev[..ev.len() - 1].iter().map(|e| serde_json::from_str::<Value>(e).unwrap()["index"].as_u64().unwrap()).collect();
    assert_eq!(idx.into_iter().collect::<Vec<_>>(), vec![0, 1]);

    // OpenAI: n choices, index 0..n-1, each its own sample.
    let c = json!({"prompt": "Hello", "max_tokens": 16, "temperature": 1.0, "seed": 7, "n": 3});
    let r = post(a, "/v1/completions", &c).await.json();
    let choices = r["choices"].as_array().unwrap();
    assert_eq!(choices.iter().map(|c| c["index"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 1, 2]);
    let gen = post(a, "/generate", &json!({"text": "Hello", "sampling_params": {"temperature": 1.0, "seed": 8, "max_new_tokens": 16}}))
        .await
        .json();
    assert_eq!(choices[1]["text"], gen["text"]);
    // Usage counts the prompt once, as OpenAI does, and every choice's tokens.
    let one = post(a, "/v1/completions", &json!({"prompt": "Hello", "max_tokens": 16, "temperature": 1.0, "seed": 7})).await.json();
    assert_eq!(r["usage"]["prompt_tokens"], one["usage"]["prompt_tokens"]);
    assert!(r["usage"]["completion_tokens"].as_u64().unwrap() > one["usage"]["completion_tokens"].as_u64().unwrap());
    let chat = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "n": 2, "stream": true,
        "stream_options": {"include_usage": true}});
    let ev = post(a, "/v1/chat/completions", &chat).await.events();
    let chunks: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let single = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8});
    let single = post(a, "/v1/chat/completions", &single).await.json();
    assert_eq!(chunks.last().unwrap()["usage"]["prompt_tokens"], single["usage"]["prompt_tokens"], "the prompt counts once");
    for i in 0..2 {
        let mine: Vec<&Value> = chunks
            .iter()
            .filter(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty()) && c["choices"][0]["index"] == json!(i))
            .collect();
        assert_eq!(mine.first().unwrap()["choices"][0]["delta"]["role"], "assistant");
        assert!(mine.last().unwrap()["choices"][0]["finish_reason"].is_string(), "choice {i} ends");
    }

    assert_error(&post(a, "/generate", &sampled(0, 1)).await, 400, "sampling_params.n must be between 1 and 128, got 0");
    assert_error(&post(a, "/generate", &sampled(129, 1)).await, 400, "n must be between 1 and 128");
    assert_error(&post(a, "/v1/completions", &json!({"prompt": "hi", "n": "2"})).await, 400, "n must be a non-negative integer");
    let mixed = json!({"text": ["a", "b"], "sampling_params": [{"n": 2}, {"n": 3}]});
    assert_error(&post(a, "/generate", &mixed).await, 400, "same n");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_regex_cuts_the_output_at_its_match() {
    let srv = serve(&["--threshold", "0"]).await;
    let a = srv.addr;
    let base = post(a, "/generate", &hello(json!({}))).await.json();
    let text = base["text"].as_str().unwrap().to_string();
    // A character that first occurs after the start: `c+` matches its first run.
    let c = text.chars().skip(1).find(|&c| !text.starts_with(c)).unwrap_or_else(|| panic!("no second character in {text:?}"));
    let pattern = format!("{}+", regex::escape(&c.to_string()));
    let m = regex::Regex::new(&pattern).unwrap().find(&text).unwrap();
    let r = post(a, "/generate", &hello(json!({"stop_regex": pattern}))).await.json();
    assert_eq!(r["text"], json!(text[..m.start()]), "{r}");
    assert_eq!(r["meta_info"]["finish_reason"], json!({"type": "stop", "matched": pattern}), "SGLang reports the pattern");
    assert!(ids(&r["output_ids"]).len() < 24);
    // no_stop_trim keeps the match; a list works; so does OpenAI's route (SGLang's extension).
    let r = post(a, "/generate", &hello(json!({"stop_regex": ["zzz+", pattern], "no_stop_trim": true}))).await.json();
    assert_eq!(r["text"].as_str().unwrap(), &text[..m.end()]);
    let r = post(
        a,
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 24, "temperature": 0, "ignore_eos": true, "block_size": 8, "stop_regex": pattern}),
    )
    .await
    .json();
    assert_eq!(r["choices"][0]["text"], json!(text[..m.start()]));
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    assert_eq!(r["choices"][0]["matched_stop"], json!(pattern));
    // A pattern that matches only the empty string never stops.
    for never in [json!("q*"), json!(""), json!([""])] {
        let r = post(a, "/generate", &hello(json!({"stop_regex": never}))).await.json();
        assert_eq!(r["meta_info"]["finish_reason"]["type"], "length", "{never}: {r}");
    }

    for (v, needle) in [
        (json!("(ab"), "sampling_params.stop_regex[0] is not a valid regex"),
        (json!(["ok", "[z-a]"]), "sampling_params.stop_regex[1] is not a valid regex"),
        (json!(r"\w{1000}{1000}"), "is not a valid regex"),
        (json!("a".repeat(300)), "at most 256"),
        (json!(5), "stop_regex must be a string or a list of strings"),
        (json!([1]), "stop_regex[0] must be a string"),
        (json!(vec!["a"; 33]), "at most 32 patterns"),
    ] {
        assert_error(&post(a, "/generate", &hello(json!({"stop_regex": v}))).await, 400, needle);
    }
    srv.shutdown().await;
}
