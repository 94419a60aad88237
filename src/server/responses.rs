//! OpenAI's Responses API, `POST /v1/responses`: `input` (a string, or a list of messages) and
//! `instructions` go through the chat template as `/v1/chat/completions`' messages do; the answer
//! is a `response` object with one assistant message, or a stream of its typed events
//! (`response.created` ... `response.output_text.delta` ... `response.completed`). Nothing is
//! stored: `previous_response_id`, `conversation` and `background` are refused, and a
//! conversation is sent whole in `input`.

use super::errors::{ApiError, ApiResult};
use super::http::{json, Resp};
use super::json::{as_bool, as_object, as_usize, is_unset, kind};
use super::log::ignored_field;
use super::openai::{self, join_text_parts, next_delta, now_unix, openai_sampling, room_after};
use super::request::{encode, new_rid, stream_sse, submit, FinishKind, Job, Sampling, StreamFormat, Update};
use super::AppState;
use crate::tokenizer::ChatMessage;
use hyper::StatusCode;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;

/// Fields of the Responses API that change nothing here (nothing is stored; there is no
/// reasoning to configure), besides those the chat route ignores (`openai::IGNORED`: `user`,
/// `metadata`, `store`, ..., and the `priority` SGLang's model gateway adds to what it forwards).
const IGNORED: &[&str] = &["reasoning", "prompt_cache_key", "safety_identifier", "max_tool_calls"];

/// The request, parsed: what to generate and what the response object echoes back.
struct ResponsesRequest {
    sampling: Sampling,
    stream: bool,
    messages: Vec<ChatMessage>,
    instructions: Option<String>,
    max_output_tokens: Option<usize>,
    metadata: Value,
}

/// A knob's value as the request gave it (a response echoes it), else the one in effect.
fn given(o: &Map<String, Value>, key: &str, in_effect: f32) -> Value {
    o.get(key).filter(|v| v.is_number()).cloned().unwrap_or_else(|| json!(in_effect))
}

fn parse(st: &AppState, o: &Map<String, Value>) -> ApiResult<ResponsesRequest> {
    let mut r = ResponsesRequest {
        sampling: openai_sampling(st),
        stream: false,
        messages: vec![],
        instructions: None,
        max_output_tokens: None,
        metadata: json!({}),
    };
    for (k, v) in o {
        let k = k.as_str();
        match k {
            "model" => st.check_model_field(v)?,
            "input" => {}
            "instructions" => match v {
                Value::Null => {}
                Value::String(s) => r.instructions = Some(s.clone()),
                other => return Err(ApiError::bad_request(format!("instructions must be a string, got {}", kind(other)))),
            },
            "max_output_tokens" => {
                if !v.is_null() {
                    r.sampling.set("max_new_tokens", v, k)?;
                    r.max_output_tokens = Some(as_usize(v, k)?);
                }
            }
            "stream" => r.stream = !v.is_null() && as_bool(v, k)?,
            "stream_options" => {
                if !v.is_null() {
                    for sk in as_object(v, k)?.keys() {
                        if sk != "include_obfuscation" {
                            return Err(ApiError::bad_request(format!("unknown field stream_options.{sk}")));
                        }
                    }
                }
            }
            "text" => {
                if !v.is_null() {
                    for (tk, tv) in as_object(v, k)? {
                        match tk.as_str() {
                            "format" => {
                                let plain = tv.is_null() || tv.get("type").and_then(Value::as_str) == Some("text");
                                if !plain {
                                    return Err(ApiError::bad_request("text.format: only {\"type\": \"text\"} is supported"));
                                }
                            }
                            "verbosity" => {}
                            other => return Err(ApiError::bad_request(format!("unknown field text.{other}"))),
                        }
                    }
                }
            }
            "tools" | "include" | "prompt" => {
                if !is_unset(v) {
                    return Err(ApiError::bad_request(format!("{k} is not supported by dllm")));
                }
            }
            "tool_choice" => {
                if !(v.is_null() || v == "none" || v == "auto") {
                    return Err(ApiError::bad_request("tool_choice is not supported by dllm (no tool calling)"));
                }
            }
            "previous_response_id" | "conversation" => {
                if !v.is_null() {
                    return Err(ApiError::bad_request(format!("{k}: dllm stores no responses; send the whole conversation in input")));
                }
            }
            "background" => {
                if !v.is_null() && as_bool(v, k)? {
                    return Err(ApiError::bad_request("background: dllm stores no responses; leave it false"));
                }
            }
            "truncation" => {
                if !(v.is_null() || v == "disabled") {
                    return Err(ApiError::bad_request("truncation: only \"disabled\" is supported (a prompt too long is an error)"));
                }
            }
            "top_logprobs" => {
                if !v.is_null() && as_usize(v, k)? > 0 {
                    return Err(ApiError::bad_request("top_logprobs: dllm keeps no alternatives to the chosen token; use 0"));
                }
            }
            k if IGNORED.contains(&k) || openai::IGNORED.contains(&k) => {
                if k == "metadata" && v.is_object() {
                    r.metadata = v.clone();
                }
                if !is_unset(v) {
                    ignored_field(&format!("field {k}"));
                }
            }
            k => {
                if !r.sampling.set(k, v, k)? {
                    return Err(ApiError::bad_request(format!("unknown field {k:?} in the request")));
                }
            }
        }
    }
    if r.sampling.n > 1 {
        return Err(ApiError::bad_request("n: a response has one output; ask /v1/chat/completions for several"));
    }
    if let Some(s) = &r.instructions {
        r.messages.push(ChatMessage { role: "system".into(), content: s.clone() });
    }
    r.messages.extend(parse_input(o.get("input"))?);
    Ok(r)
}

/// `input`: a string (one user message) or a list of messages, each `{"role", "content"}` (with
/// or without `"type": "message"`), whose content is a string or a list of text parts. OpenAI's
/// `developer` role is the template's `system`.
fn parse_input(v: Option<&Value>) -> ApiResult<Vec<ChatMessage>> {
    let items = match v {
        Some(Value::String(s)) => return Ok(vec![ChatMessage { role: "user".into(), content: s.clone() }]),
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(ApiError::bad_request("input is empty")),
        None | Some(Value::Null) => return Err(ApiError::bad_request("the request needs an input")),
        Some(other) => return Err(ApiError::bad_request(format!("input must be a string or a list of messages, got {}", kind(other)))),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("input[{i}]");
            let m = as_object(item, &at)?;
            match m.get("type").and_then(Value::as_str) {
                None | Some("message") => {}
                Some(t) => {
                    return Err(ApiError::bad_request(format!("{at}: items of type {t:?} are not supported by dllm (messages only)")))
                }
            }
            let role = match m.get("role").and_then(Value::as_str) {
                Some("developer") => "system",
                Some(r @ ("system" | "user" | "assistant")) => r,
                Some(r) => return Err(ApiError::bad_request(format!("{at}.role {r:?} is not one of user, assistant, system, developer"))),
                None => return Err(ApiError::bad_request(format!("{at}.role must be a string"))),
            };
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => join_text_parts(parts, &at, &["input_text", "output_text", "text"])?,
                None | Some(Value::Null) => return Err(ApiError::bad_request(format!("{at} needs a content"))),
                Some(other) => {
                    return Err(ApiError::bad_request(format!("{at}.content must be a string or a list of parts, got {}", kind(other))))
                }
            };
            Ok(ChatMessage { role: role.to_string(), content })
        })
        .collect()
}

pub async fn create(st: &Arc<AppState>, body: Value) -> ApiResult<Resp> {
    let started = Instant::now();
    let o = as_object(&body, "the request body")?;
    let mut r = parse(st, o)?;
    let text = st.tokenizer.chat_template.render(&r.messages, &Map::new()).map_err(|e| ApiError::bad_request(format!("input: {e}")))?;
    let prompt = encode(st, &text, "input")?;
    if r.max_output_tokens.is_none() {
        r.sampling.params.max_new_tokens = room_after(st, r.sampling.params.block_size, prompt.len());
    }
    let rid = new_rid();
    let shape = Shape {
        id: format!("resp_{rid}"),
        item_id: format!("msg_{rid}"),
        created_at: now_unix(),
        model: st.model_name.clone(),
        instructions: r.instructions.clone(),
        max_output_tokens: r.max_output_tokens,
        temperature: given(o, "temperature", r.sampling.params.temperature),
        top_p: given(o, "top_p", r.sampling.params.top_p),
        metadata: r.metadata.clone(),
        input_tokens: prompt.len(),
    };
    let run = submit(st, Job { prompt, sampling: r.sampling, rid: shape.id.clone() }, started).await?;
    if !r.stream {
        let u = run.finish().await;
        let fin = u.finish.clone().unwrap_or(FinishKind::Length(0));
        if let Some(e) = fin.error(&shape.id) {
            return Err(e);
        }
        return Ok(json(StatusCode::OK, &shape.response(Some(&fin), &u.text, u.output_ids.len())));
    }
    Ok(stream_sse(vec![run], ResponsesStream { shape, sequence: 0, sent: String::new() }))
}

/// What every response object and event of one request carries.
struct Shape {
    id: String,
    item_id: String,
    created_at: u64,
    model: String,
    instructions: Option<String>,
    max_output_tokens: Option<usize>,
    temperature: Value,
    top_p: Value,
    metadata: Value,
    input_tokens: usize,
}

/// A response's status: in progress until its end, then `completed` (a stop), `incomplete` (the
/// length: max_output_tokens), `cancelled` (an `/abort_request`) or `failed`.
#[derive(Clone, Copy, PartialEq)]
enum Status {
    InProgress,
    Completed,
    Incomplete,
    Cancelled,
    Failed,
}

impl Status {
    fn of(fin: Option<&FinishKind>) -> Status {
        match fin {
            None => Status::InProgress,
            Some(FinishKind::StopToken(_) | FinishKind::StopStr(_) | FinishKind::StopRegex(_)) => Status::Completed,
            Some(FinishKind::Length(_)) => Status::Incomplete,
            Some(FinishKind::Aborted(_)) => Status::Cancelled,
            Some(FinishKind::Abort(_) | FinishKind::Unavailable(_)) => Status::Failed,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Incomplete => "incomplete",
            Status::Cancelled => "cancelled",
            Status::Failed => "failed",
        }
    }

    /// The output message's status: a message is in progress, completed or incomplete.
    fn of_item(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            _ => "incomplete",
        }
    }

    /// The stream's last event (the SDKs know these three ends).
    fn end_event(self) -> &'static str {
        match self {
            Status::Completed => "response.completed",
            Status::Failed => "response.failed",
            _ => "response.incomplete",
        }
    }
}

impl Shape {
    /// The assistant message (the response's one output item) holding `text`.
    fn item(&self, fin: Option<&FinishKind>, text: &str) -> Value {
        let item_status = Status::of(fin).of_item();
        let content = if fin.is_none() && text.is_empty() { json!([]) } else { json!([self.part(text)]) };
        json!({"type": "message", "id": self.item_id, "status": item_status, "role": "assistant", "content": content})
    }

    fn part(&self, text: &str) -> Value {
        json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    }

    /// The response object: `output` empty while it runs, then the message; `usage` at its end.
    fn response(&self, fin: Option<&FinishKind>, text: &str, output_tokens: usize) -> Value {
        let status = Status::of(fin).as_str();
        let error = match fin {
            Some(FinishKind::Abort(m) | FinishKind::Unavailable(m)) => json!({"code": "server_error", "message": m}),
            _ => Value::Null,
        };
        let incomplete = match fin {
            Some(FinishKind::Length(_)) => json!({"reason": "max_output_tokens"}),
            _ => Value::Null,
        };
        let (output, usage) = match fin {
            None => (json!([]), Value::Null),
            Some(_) => (
                json!([self.item(fin, text)]),
                json!({
                    "input_tokens": self.input_tokens, "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": self.input_tokens + output_tokens,
                }),
            ),
        };
        json!({
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "error": error, "incomplete_details": incomplete, "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens, "model": self.model, "output": output,
            "parallel_tool_calls": false, "previous_response_id": null, "reasoning": {"effort": null, "summary": null},
            "store": false, "temperature": self.temperature, "text": {"format": {"type": "text"}},
            "tool_choice": "none", "tools": [], "top_p": self.top_p, "truncation": "disabled",
            "usage": usage, "metadata": self.metadata,
        })
    }
}

/// The Responses stream of one request: the response created and in progress, its message and
/// text part opened, a `response.output_text.delta` for each block's new text, then the text,
/// part and message done and the response's end (`response.completed`, `response.incomplete` or
/// `response.failed`) with the whole response. Every event carries its `sequence_number`.
struct ResponsesStream {
    shape: Shape,
    sequence: u64,
    /// The text the deltas have carried so far.
    sent: String,
}

impl ResponsesStream {
    fn event(&mut self, kind: &str, mut fields: Value) -> Value {
        fields["type"] = json!(kind);
        fields["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        fields
    }
}

impl StreamFormat for ResponsesStream {
    fn opening(&mut self) -> Vec<Value> {
        let running = self.shape.response(None, "", 0);
        let item = self.shape.item(None, "");
        let (item_id, part) = (self.shape.item_id.clone(), self.shape.part(""));
        vec![
            self.event("response.created", json!({ "response": running })),
            self.event("response.in_progress", json!({ "response": running })),
            self.event("response.output_item.added", json!({"output_index": 0, "item": item})),
            self.event("response.content_part.added", json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part})),
        ]
    }

    fn update(&mut self, _i: usize, u: &Update) -> Vec<Value> {
        let d = next_delta(&mut self.sent, u);
        let item_id = self.shape.item_id.clone();
        let mut events = vec![];
        if !d.is_empty() {
            events.push(self.event(
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": d, "logprobs": []}),
            ));
        }
        let Some(fin) = &u.finish else { return events };
        let text = self.sent.clone();
        let (part, item) = (self.shape.part(&text), self.shape.item(Some(fin), &text));
        let whole = self.shape.response(Some(fin), &text, u.output_ids.len());
        events.push(self.event(
            "response.output_text.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
        ));
        events.push(
            self.event("response.content_part.done", json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part})),
        );
        events.push(self.event("response.output_item.done", json!({"output_index": 0, "item": item})));
        events.push(self.event(Status::of(Some(fin)).end_event(), json!({ "response": whole })));
        events
    }

    fn event_name<'a>(&self, v: &'a Value) -> Option<&'a str> {
        v.get("type").and_then(Value::as_str)
    }

    fn ends_with_done(&self) -> bool {
        false
    }
}
