//! OpenAI-compatible routes: `/v1/models`, `/v1/completions`, `/v1/chat/completions`
//! (JSON or server-sent events with incremental deltas, `usage`, `stream_options.include_usage`).

use super::errors::{ApiError, ApiResult};
use super::http::{json, Resp};
use super::json::{as_bool, as_object, as_u32, as_usize, is_unset, kind};
use super::log::ignored_field;
use super::request::{
    encode, expand_n, new_rid, settled, stream_sse, submit_all, token_texts, FinishKind, Job, Running, Sampling, StreamFormat, Update,
};
use super::AppState;
use crate::tokenizer::{ChatMessage, Tokenizer};
use hyper::StatusCode;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;

pub fn models(st: &AppState) -> Value {
    json!({"object": "list", "data": [model_object(st)]})
}

/// `GET /v1/models/{id}`: the served model, or OpenAI's 404 for any other id.
pub fn model(st: &AppState, id: &str) -> ApiResult<Value> {
    st.check_model(id)?;
    Ok(model_object(st))
}

fn model_object(st: &AppState) -> Value {
    json!({
        "id": st.model_name,
        "object": "model",
        "created": st.created_unix,
        "owned_by": "dllm",
        "root": st.model_name,
        "max_model_len": st.context_len,
    })
}

/// Request fields both routes share; the rest are sampling fields or errors.
struct Common {
    sampling: Sampling,
    stream: bool,
    include_usage: bool,
    max_tokens_given: bool,
    rid: Option<String>,
    /// Completions' `logprobs: 0`, chat's `logprobs: true`: each chosen token's logprob.
    logprobs: bool,
}

/// Fields OpenAI clients (and SGLang's model gateway, which adds `priority`) send that change
/// nothing here.
pub(super) const IGNORED: &[&str] = &[
    "user",
    "parallel_tool_calls",
    "separate_reasoning",
    "stream_reasoning",
    "metadata",
    "store",
    "service_tier",
    "reasoning_effort",
    "continue_final_message",
    "return_hidden_states",
    "lora_path",
    "bootstrap_host",
    "bootstrap_port",
    "bootstrap_room",
    "priority",
];

/// Ignored fields whose SGLang default is true: SGLang's model gateway sends them so with every
/// chat request, which asks for nothing to warn about.
const DEFAULT_TRUE: &[&str] = &["separate_reasoning", "stream_reasoning"];

/// The chosen token's logprob is all there is: the fused GPU pick keeps no alternatives.
const NO_TOP_LOGPROBS: &str = "only the chosen token's logprob is available (dllm keeps no alternatives)";

/// The server's sampling defaults under OpenAI's: its default temperature is 1, and a request
/// that wants greedy says so. JointThresholdInDel decodes greedily only, so under it the default
/// is 0 (a temperature above 0 is a 400).
pub(super) fn openai_sampling(st: &AppState) -> Sampling {
    let mut s = Sampling::new(st);
    s.params.temperature = if s.params.reads_rows() { 0.0 } else { 1.0 };
    s
}

fn parse_common(st: &AppState, o: &Map<String, Value>, own: &[&str], flavor: Flavor) -> ApiResult<Common> {
    let mut c =
        Common { sampling: openai_sampling(st), stream: false, include_usage: false, max_tokens_given: false, rid: None, logprobs: false };
    for (k, v) in o {
        let k = k.as_str();
        if own.contains(&k) {
            continue;
        }
        match k {
            "model" => st.check_model_field(v)?,
            "max_tokens" | "max_completion_tokens" | "max_new_tokens" => {
                if !v.is_null() {
                    c.sampling.set("max_new_tokens", v, k)?;
                    c.max_tokens_given = true;
                }
            }
            "min_tokens" => {
                c.sampling.set("min_new_tokens", v, k)?;
            }
            "stream" => c.stream = !v.is_null() && as_bool(v, k)?,
            "stream_options" => {
                if !v.is_null() {
                    for (sk, sv) in as_object(v, k)? {
                        match sk.as_str() {
                            "include_usage" => c.include_usage = !sv.is_null() && as_bool(sv, "stream_options.include_usage")?,
                            "continuous_usage_stats" => {}
                            other => return Err(ApiError::bad_request(format!("unknown field stream_options.{other}"))),
                        }
                    }
                }
            }
            "rid" => {
                if let Some(s) = v.as_str() {
                    c.rid = Some(s.to_string());
                }
            }
            "logprobs" if !v.is_null() => match flavor {
                // Completions: the number of alternatives per token besides the chosen one.
                Flavor::Completion => {
                    if as_usize(v, k)? > 0 {
                        return Err(ApiError::bad_request(format!("logprobs = {v}: {NO_TOP_LOGPROBS}; use logprobs: 0")));
                    }
                    c.logprobs = true;
                }
                Flavor::Chat => c.logprobs = as_bool(v, k)?,
            },
            "top_logprobs" if flavor == Flavor::Chat && !v.is_null() => {
                if as_usize(v, k)? > 0 {
                    return Err(ApiError::bad_request(format!("top_logprobs = {v}: {NO_TOP_LOGPROBS}; use 0")));
                }
            }
            "echo" | "logprobs" | "top_logprobs" | "suffix" | "tools" | "functions" => {
                if !is_unset(v) {
                    return Err(ApiError::bad_request(format!("{k} is not supported by dllm")));
                }
            }
            "best_of" => {
                if !v.is_null() && v.as_u64() != Some(1) {
                    return Err(ApiError::bad_request("best_of: only 1 is supported"));
                }
            }
            "tool_choice" | "function_call" => {
                if !(v.is_null() || v == "none" || v == "auto") {
                    return Err(ApiError::bad_request(format!("{k} is not supported by dllm (no tool calling)")));
                }
            }
            "response_format" => {
                let plain = v.is_null() || v.get("type").and_then(Value::as_str) == Some("text");
                if !plain {
                    return Err(ApiError::bad_request("response_format: only {\"type\": \"text\"} is supported"));
                }
            }
            k if IGNORED.contains(&k) => {
                let default = DEFAULT_TRUE.contains(&k) && *v == Value::Bool(true);
                if !is_unset(v) && !default {
                    ignored_field(&format!("field {k}"));
                }
            }
            k => {
                if !c.sampling.set(k, v, k)? {
                    return Err(ApiError::bad_request(format!("unknown field {k:?} in the request")));
                }
            }
        }
    }
    Ok(c)
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

pub(super) fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The text update `u` adds to what a stream has `sent` (which it then holds). A trailing U+FFFD
/// may be half a character whose rest comes in the next block: it is held back until then
/// (deltas cannot be taken back).
pub(super) fn next_delta(sent: &mut String, u: &Update) -> String {
    let shown = if u.finish.is_none() { settled(&u.text) } else { u.text.as_str() };
    let d = delta(sent, shown);
    *sent = shown.to_string();
    d
}

/// Text added since `prev` (cumulative text can, rarely, rewrite its tail: then what differs).
fn delta(prev: &str, now: &str) -> String {
    if let Some(d) = now.strip_prefix(prev) {
        return d.to_string();
    }
    let common = prev.char_indices().zip(now.chars()).take_while(|((_, a), b)| a == b).count();
    now.chars().skip(common).collect()
}

/// Everything that differs between the two routes' answers.
#[derive(Clone, Copy, PartialEq)]
enum Flavor {
    Completion,
    Chat,
}

pub async fn completions(st: &Arc<AppState>, body: Value) -> ApiResult<Resp> {
    let started = Instant::now();
    let o = as_object(&body, "the request body")?;
    let mut c = parse_common(st, o, &["prompt"], Flavor::Completion)?;
    if !c.max_tokens_given {
        c.sampling.params.max_new_tokens = 16;
    }
    let prompts: Vec<Vec<u32>> = match o.get("prompt") {
        None | Some(Value::Null) => return Err(ApiError::bad_request("the request needs a prompt")),
        Some(Value::String(s)) => vec![encode(st, s, "prompt")?],
        Some(Value::Array(a)) if a.is_empty() => return Err(ApiError::bad_request("prompt is an empty list")),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .enumerate()
            .map(|(i, s)| encode(st, s.as_str().unwrap_or_default(), &format!("prompt[{i}]")))
            .collect::<ApiResult<_>>()?,
        Some(Value::Array(a)) if a.iter().all(Value::is_array) => {
            a.iter().enumerate().map(|(i, row)| ids(row, &format!("prompt[{i}]"))).collect::<ApiResult<_>>()?
        }
        Some(p @ Value::Array(_)) => vec![ids(p, "prompt")?],
        Some(other) => {
            return Err(ApiError::bad_request(format!("prompt must be a string, a list of strings, or token ids, got {}", kind(other))))
        }
    };
    run(st, c, prompts, Flavor::Completion, started).await
}

fn ids(v: &Value, at: &str) -> ApiResult<Vec<u32>> {
    let a = v.as_array().ok_or_else(|| ApiError::bad_request(format!("{at} must be a list of token ids")))?;
    let r: Vec<u32> = a.iter().enumerate().map(|(i, t)| as_u32(t, &format!("{at}[{i}]"))).collect::<ApiResult<_>>()?;
    if r.is_empty() {
        return Err(ApiError::bad_request(format!("{at} is empty")));
    }
    Ok(r)
}

fn parse_messages(v: Option<&Value>) -> ApiResult<Vec<ChatMessage>> {
    let a = match v {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(ApiError::bad_request("messages is empty")),
        None | Some(Value::Null) => return Err(ApiError::bad_request("the request needs messages")),
        Some(other) => return Err(ApiError::bad_request(format!("messages must be a list, got {}", kind(other)))),
    };
    a.iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("messages[{i}]");
            let m = as_object(m, &at)?;
            let role = m.get("role").and_then(Value::as_str).ok_or_else(|| ApiError::bad_request(format!("{at}.role must be a string")))?;
            let content = match m.get("content") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => join_text_parts(parts, &at, &["text"])?,
                Some(other) => {
                    return Err(ApiError::bad_request(format!("{at}.content must be a string or a list of parts, got {}", kind(other))))
                }
            };
            Ok(ChatMessage { role: role.to_string(), content })
        })
        .collect()
}

/// A message's content parts joined into its text: parts of the `text_types` carry it in their
/// `text`; a part of any other type (an image, a file) is a 400 naming it.
pub(super) fn join_text_parts(parts: &[Value], at: &str, text_types: &[&str]) -> ApiResult<String> {
    let mut s = String::new();
    for (j, p) in parts.iter().enumerate() {
        let pat = format!("{at}.content[{j}]");
        match p.get("type").and_then(Value::as_str) {
            Some(t) if text_types.contains(&t) => s.push_str(
                p.get("text").and_then(Value::as_str).ok_or_else(|| ApiError::bad_request(format!("{pat}.text must be a string")))?,
            ),
            Some(t) => return Err(ApiError::bad_request(format!("{pat}: content of type {t:?} is not supported"))),
            None => return Err(ApiError::bad_request(format!("{pat} needs a type"))),
        }
    }
    Ok(s)
}

/// The token limit of a request that gives none: what the context leaves after its prompt, in
/// whole blocks.
pub(super) fn room_after(st: &AppState, block_size: usize, prompt: usize) -> usize {
    let b = block_size.max(1);
    (st.context_len / b * b).saturating_sub(prompt).max(1)
}

pub async fn chat(st: &Arc<AppState>, body: Value) -> ApiResult<Resp> {
    let started = Instant::now();
    let o = as_object(&body, "the request body")?;
    let mut c = parse_common(st, o, &["messages", "chat_template_kwargs"], Flavor::Chat)?;
    let messages = parse_messages(o.get("messages"))?;
    let kwargs = match o.get("chat_template_kwargs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(kw)) => kw.clone(),
        Some(other) => return Err(ApiError::bad_request(format!("chat_template_kwargs must be an object, got {}", kind(other)))),
    };
    let text = st.tokenizer.chat_template.render(&messages, &kwargs).map_err(|e| ApiError::bad_request(format!("messages: {e}")))?;
    let prompt = encode(st, &text, "messages")?;
    if !c.max_tokens_given {
        c.sampling.params.max_new_tokens = room_after(st, c.sampling.params.block_size, prompt.len());
    }
    run(st, c, vec![prompt], Flavor::Chat, started).await
}

async fn run(st: &Arc<AppState>, c: Common, prompts: Vec<Vec<u32>>, flavor: Flavor, started: Instant) -> ApiResult<Resp> {
    let id = match flavor {
        Flavor::Completion => format!("cmpl-{}", c.rid.clone().unwrap_or_else(new_rid)),
        Flavor::Chat => format!("chatcmpl-{}", c.rid.clone().unwrap_or_else(new_rid)),
    };
    // OpenAI counts a prompt's tokens once, however many samples it has.
    let prompt_total: usize = prompts.iter().map(Vec::len).sum();
    // n samples per prompt: choice i * n + j is prompt i's sample j (OpenAI's numbering).
    let jobs: Vec<Job> = expand_n(
        prompts.into_iter().enumerate().map(|(i, prompt)| Job { prompt, sampling: c.sampling.clone(), rid: format!("{id}-{i}") }).collect(),
    );
    let runs: Vec<Running> = submit_all(st, jobs, started).await?;
    let n = runs.len();
    let model = st.model_name.clone();
    let created = now_unix();
    let (object, chunk_object) = match flavor {
        Flavor::Completion => ("text_completion", "text_completion"),
        Flavor::Chat => ("chat.completion", "chat.completion.chunk"),
    };
    if !c.stream {
        let mut choices = vec![];
        let mut completion = 0;
        for (i, r) in runs.into_iter().enumerate() {
            let rid = r.rid.clone();
            let u = r.finish().await;
            let fin = u.finish.clone().unwrap_or(FinishKind::Length(0));
            if let Some(e) = fin.error(&rid) {
                return Err(e);
            }
            completion += u.output_ids.len();
            let logprobs = if c.logprobs { logprobs_value(flavor, &st.tokenizer, &u, 0, &mut 0) } else { Value::Null };
            choices.push(match flavor {
                Flavor::Completion => json!({
                    "index": i, "text": u.text, "logprobs": logprobs,
                    "finish_reason": fin.openai(), "matched_stop": fin.matched(),
                }),
                Flavor::Chat => json!({
                    "index": i,
                    "message": {"role": "assistant", "content": u.text, "reasoning_content": null, "tool_calls": null},
                    "logprobs": logprobs, "finish_reason": fin.openai(), "matched_stop": fin.matched(),
                }),
            });
        }
        return Ok(json(
            StatusCode::OK,
            &json!({"id": id, "object": object, "created": created, "model": model, "choices": choices, "usage": usage(prompt_total, completion)}),
        ));
    }
    let format = OpenAiStream {
        id,
        object: chunk_object,
        created,
        model,
        flavor,
        include_usage: c.include_usage,
        prompt_total,
        sent: vec![String::new(); n],
        completion: vec![0; n],
        logprobs: c.logprobs.then(|| st.tokenizer.clone()),
        logprobs_sent: vec![0; n],
        text_offset: vec![0; n],
    };
    Ok(stream_sse(runs, format))
}

/// The logprobs of `u`'s tokens from `from` on, in the route's shape. Completions:
/// `{tokens, token_logprobs, top_logprobs: null, text_offset}`, where a token's offset is
/// `offset` plus the characters of the tokens before it (advanced past these tokens). Chat:
/// `{content: [{token, logprob, bytes, top_logprobs: []}]}`.
fn logprobs_value(flavor: Flavor, tok: &Tokenizer, u: &Update, from: usize, offset: &mut usize) -> Value {
    let from = from.min(u.output_ids.len());
    let texts = token_texts(tok, &u.output_ids[from..]);
    let lps = &u.logprobs[from.min(u.logprobs.len())..];
    match flavor {
        Flavor::Completion => {
            let offsets: Vec<usize> = texts
                .iter()
                .map(|t| {
                    let at = *offset;
                    *offset += t.chars().count();
                    at
                })
                .collect();
            json!({"tokens": texts, "token_logprobs": lps, "top_logprobs": null, "text_offset": offsets})
        }
        Flavor::Chat => {
            let content: Vec<Value> = texts
                .iter()
                .zip(lps)
                .map(|(t, lp)| json!({"token": t, "logprob": lp, "bytes": t.as_bytes(), "top_logprobs": []}))
                .collect();
            json!({ "content": content })
        }
    }
}

/// The OpenAI routes' stream: chunks carrying the text added since the last one (chat opens
/// each choice with the assistant's role), and the usage at the end if it was asked for.
struct OpenAiStream {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    flavor: Flavor,
    include_usage: bool,
    /// The prompts' tokens (each prompt once, whatever `n`).
    prompt_total: usize,
    /// Per request: the text its deltas have carried so far.
    sent: Vec<String>,
    /// Per request: tokens generated so far.
    completion: Vec<usize>,
    /// Set when logprobs were asked for (it names their tokens).
    logprobs: Option<Arc<Tokenizer>>,
    /// Per request: tokens whose logprobs have been sent.
    logprobs_sent: Vec<usize>,
    /// Per request: the completions `text_offset` of the next token.
    text_offset: Vec<usize>,
}

impl OpenAiStream {
    fn chunk(&self, choice: Value) -> Value {
        json!({"id": self.id, "object": self.object, "created": self.created, "model": self.model, "choices": [choice], "usage": null})
    }
}

impl StreamFormat for OpenAiStream {
    fn opening(&mut self) -> Vec<Value> {
        if self.flavor != Flavor::Chat {
            return Vec::new();
        }
        (0..self.sent.len())
            .map(|i| {
                self.chunk(json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}))
            })
            .collect()
    }

    fn update(&mut self, i: usize, u: &Update) -> Vec<Value> {
        let d = next_delta(&mut self.sent[i], u);
        self.completion[i] = u.output_ids.len();
        let fin = u.finish.as_ref();
        if let Some(e) = fin.and_then(|f| f.error(&self.id)) {
            return vec![e.body()];
        }
        // The tokens this update added, whatever part of their text the delta holds back.
        let logprobs = match &self.logprobs {
            Some(tok) => {
                let v = logprobs_value(self.flavor, tok, u, self.logprobs_sent[i], &mut self.text_offset[i]);
                self.logprobs_sent[i] = self.logprobs_sent[i].max(u.output_ids.len());
                v
            }
            None => Value::Null,
        };
        let choice = match self.flavor {
            Flavor::Completion => json!({
                "index": i, "text": d, "logprobs": logprobs,
                "finish_reason": fin.map(FinishKind::openai), "matched_stop": fin.map(FinishKind::matched),
            }),
            Flavor::Chat => json!({
                "index": i, "delta": {"content": d}, "logprobs": logprobs,
                "finish_reason": fin.map(FinishKind::openai), "matched_stop": fin.map(FinishKind::matched),
            }),
        };
        vec![self.chunk(choice)]
    }

    fn closing(&mut self) -> Vec<Value> {
        if !self.include_usage {
            return Vec::new();
        }
        let usage = usage(self.prompt_total, self.completion.iter().sum());
        vec![json!({"id": self.id, "object": self.object, "created": self.created, "model": self.model, "choices": [], "usage": usage})]
    }
}
