//! SGLang's native `/generate` (text or input_ids, single or batch, JSON or server-sent
//! events) and `/health_generate`.

use super::errors::{ApiError, ApiResult};
use super::http::{json, Resp};
use super::json::{as_bool, as_i64, as_object, as_u32, as_usize, is_unset, kind};
use super::log::ignored_field;
use super::request::{
    encode, expand_n, new_rid, stream_sse, submit, submit_all, token_texts, FinishKind, Job, Running, Sampling, StreamFormat, Update,
};
use super::AppState;
use hyper::StatusCode;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;

const GENERATE_FIELDS: &[&str] = &[
    "text",
    "model",
    "input_ids",
    "sampling_params",
    "stream",
    "rid",
    "return_logprob",
    "return_text_in_logprobs",
    "logprob_start_len",
    "top_logprobs_num",
    "token_ids_logprob",
];
/// SGLang request fields that change nothing here: accepted with a warning.
const GENERATE_IGNORED: &[&str] = &[
    "log_metrics",
    "priority",
    "data_parallel_rank",
    "custom_labels",
    "no_logs",
    "background",
    "extra_key",
    "routing_key",
    "stream_options",
    "modalities",
    "lora_id",
    "lora_path",
    "bootstrap_host",
    "bootstrap_port",
    "bootstrap_room",
    "bootstrap_pair_key",
    "conversation_id",
    "custom_logit_processor",
];
/// Ignored fields whose SGLang default is true: SGLang's model gateway sends them so with every
/// request, which asks for nothing to warn about.
const GENERATE_DEFAULT_TRUE: &[&str] = &["log_metrics"];
/// SGLang request fields that ask for something we do not do: refused unless unset.
const GENERATE_UNSUPPORTED: &[&str] = &[
    "return_hidden_states",
    "image_data",
    "audio_data",
    "video_data",
    "input_embeds",
    "session_params",
    "return_routed_experts",
    "return_entropy",
    "return_bytes",
];

/// The prompts of a request, and whether it was a batch (answer with a list).
fn parse_prompts(st: &AppState, o: &Map<String, Value>) -> ApiResult<(Vec<Vec<u32>>, bool)> {
    match (o.get("text").filter(|v| !v.is_null()), o.get("input_ids").filter(|v| !v.is_null())) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("give either text or input_ids, not both")),
        (None, None) => Err(ApiError::bad_request("the request needs text or input_ids")),
        (Some(t), None) => match t {
            Value::String(s) => Ok((vec![encode(st, s, "text")?], false)),
            Value::Array(a) if a.is_empty() => Err(ApiError::bad_request("text is an empty list")),
            Value::Array(a) => {
                let p = a
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let at = format!("text[{i}]");
                        let s = s.as_str().ok_or_else(|| ApiError::bad_request(format!("{at} must be a string, got {}", kind(s))))?;
                        encode(st, s, &at)
                    })
                    .collect::<ApiResult<_>>()?;
                Ok((p, true))
            }
            other => Err(ApiError::bad_request(format!("text must be a string or a list of strings, got {}", kind(other)))),
        },
        (None, Some(ids)) => {
            let a = ids.as_array().ok_or_else(|| {
                ApiError::bad_request(format!("input_ids must be a list of token ids or a list of lists, got {}", kind(ids)))
            })?;
            if a.is_empty() {
                return Err(ApiError::bad_request("input_ids is empty"));
            }
            if a.iter().all(Value::is_array) {
                let p = a.iter().enumerate().map(|(i, row)| token_list(row, &format!("input_ids[{i}]"))).collect::<ApiResult<_>>()?;
                Ok((p, true))
            } else {
                Ok((vec![token_list(ids, "input_ids")?], false))
            }
        }
    }
}

fn token_list(v: &Value, at: &str) -> ApiResult<Vec<u32>> {
    let a = v.as_array().ok_or_else(|| ApiError::bad_request(format!("{at} must be a list of token ids, got {}", kind(v))))?;
    let ids: Vec<u32> = a.iter().enumerate().map(|(i, t)| as_u32(t, &format!("{at}[{i}]"))).collect::<ApiResult<_>>()?;
    if ids.is_empty() {
        return Err(ApiError::bad_request(format!("{at} is empty")));
    }
    Ok(ids)
}

fn parse_sampling(st: &AppState, v: Option<&Value>, at: &str) -> ApiResult<Sampling> {
    let mut s = Sampling::new(st);
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(s) };
    for (k, val) in as_object(v, at)? {
        let name = format!("{at}.{k}");
        if !s.set(k, val, &name)? {
            return Err(ApiError::bad_request(format!("unknown field {name}")));
        }
    }
    Ok(s)
}

/// A `/generate` request read: its jobs (one per prompt and sample) and how to answer.
pub struct Parsed {
    pub jobs: Vec<Job>,
    /// Answer with a list (several prompts, or n > 1).
    pub batch: bool,
    pub stream: bool,
    /// `return_logprob`: `Some(with_text)` adds `meta_info.output_token_logprobs`, with each
    /// token's text when `return_text_in_logprobs`.
    pub logprobs: Option<bool>,
}

/// SGLang's logprob fields. Only output logprobs of the chosen tokens exist here: a diffusion
/// model does not score its prompt left to right, and the fused GPU pick keeps no alternatives.
fn parse_logprobs(o: &Map<String, Value>) -> ApiResult<Option<bool>> {
    let flag = |k: &str| o.get(k).filter(|v| !v.is_null()).map(|v| as_bool(v, k)).transpose().map(|b| b.unwrap_or(false));
    if let Some(v) = o.get("logprob_start_len").filter(|v| !v.is_null()) {
        if as_i64(v, "logprob_start_len")? != -1 {
            return Err(ApiError::bad_request(
                "logprob_start_len: input token logprobs are not available (a diffusion model does not score its prompt left to right); leave it unset or -1",
            ));
        }
    }
    if let Some(v) = o.get("top_logprobs_num").filter(|v| !v.is_null()) {
        if as_usize(v, "top_logprobs_num")? != 0 {
            return Err(ApiError::bad_request("top_logprobs_num: only the chosen token's logprob is available; leave it 0"));
        }
    }
    if o.get("token_ids_logprob").is_some_and(|v| !is_unset(v)) {
        return Err(ApiError::bad_request("token_ids_logprob: only the chosen token's logprob is available"));
    }
    Ok(flag("return_logprob")?.then_some(flag("return_text_in_logprobs")?))
}

/// Read a `/generate` body into jobs.
pub fn parse_generate(st: &AppState, body: &Value) -> ApiResult<Parsed> {
    let o = as_object(body, "the request body")?;
    for (k, v) in o {
        if GENERATE_FIELDS.contains(&k.as_str()) {
            continue;
        }
        if GENERATE_UNSUPPORTED.contains(&k.as_str()) {
            if is_unset(v) {
                continue;
            }
            return Err(ApiError::bad_request(format!("{k} is not supported by dllm")));
        }
        if GENERATE_IGNORED.contains(&k.as_str()) {
            let default = GENERATE_DEFAULT_TRUE.contains(&k.as_str()) && *v == Value::Bool(true);
            if !is_unset(v) && !default {
                ignored_field(&format!("/generate: field {k}"));
            }
            continue;
        }
        return Err(ApiError::bad_request(format!("unknown field {k:?} in the request")));
    }
    if let Some(m) = o.get("model") {
        st.check_model_field(m)?;
    }
    let stream = match o.get("stream") {
        None | Some(Value::Null) => false,
        Some(v) => as_bool(v, "stream")?,
    };
    let (prompts, batch) = parse_prompts(st, o)?;
    let n = prompts.len();
    let samplings: Vec<Sampling> = match o.get("sampling_params") {
        Some(Value::Array(a)) if batch => {
            if a.len() != n {
                return Err(ApiError::bad_request(format!("sampling_params has {} entries for {n} prompts", a.len())));
            }
            a.iter().enumerate().map(|(i, v)| parse_sampling(st, Some(v), &format!("sampling_params[{i}]"))).collect::<ApiResult<_>>()?
        }
        v => vec![parse_sampling(st, v, "sampling_params")?; n],
    };
    let rids: Vec<String> = match o.get("rid") {
        None | Some(Value::Null) => (0..n).map(|_| new_rid()).collect(),
        Some(Value::String(s)) if !batch => vec![s.clone()],
        Some(Value::String(s)) => (0..n).map(|i| format!("{s}-{i}")).collect(),
        Some(Value::Array(a)) if batch && a.len() == n => a
            .iter()
            .enumerate()
            .map(|(i, r)| r.as_str().map(str::to_string).ok_or_else(|| ApiError::bad_request(format!("rid[{i}] must be a string"))))
            .collect::<ApiResult<_>>()?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "rid must be a string (or, for a batch of {n}, a list of {n} strings), got {}",
                kind(other)
            )))
        }
    };
    // SGLang: one n for the whole batch; n > 1 answers a list, prompt by prompt.
    let n_samples = samplings[0].n;
    if samplings.iter().any(|s| s.n != n_samples) {
        return Err(ApiError::bad_request("sampling_params: every entry of a batch must have the same n"));
    }
    let logprobs = parse_logprobs(o)?;
    let jobs = prompts.into_iter().zip(samplings).zip(rids).map(|((prompt, sampling), rid)| Job { prompt, sampling, rid }).collect();
    Ok(Parsed { jobs: expand_n(jobs), batch: batch || n_samples > 1, stream, logprobs })
}

pub async fn generate(st: &Arc<AppState>, body: Value) -> ApiResult<Resp> {
    let started = Instant::now();
    let Parsed { jobs, batch, stream, logprobs } = parse_generate(st, &body)?;
    let runs = submit_all(st, jobs, started).await?;
    let heads: Vec<Head> = runs.iter().map(|r| Head::of(r, logprobs)).collect();
    if !stream {
        let mut out = Vec::with_capacity(runs.len());
        for (r, head) in runs.into_iter().zip(&heads) {
            let u = r.finish().await;
            if let Some(e) = u.finish.as_ref().and_then(|f| f.error(&head.rid)) {
                return Err(e);
            }
            out.push(generate_value(st, head, &u));
        }
        let v = if batch { Value::Array(out) } else { out.pop().unwrap_or(Value::Null) };
        return Ok(json(StatusCode::OK, &v));
    }
    Ok(stream_sse(runs, GenerateStream { st: st.clone(), heads, batch }))
}

/// `/generate`'s stream: each event is the request's whole answer so far (SGLang's
/// cumulative `text`), with its `index` in a batch.
struct GenerateStream {
    st: Arc<AppState>,
    /// Per request: its id and prompt length.
    heads: Vec<Head>,
    batch: bool,
}

impl StreamFormat for GenerateStream {
    fn update(&mut self, i: usize, u: &Update) -> Vec<Value> {
        let mut v = generate_value(&self.st, &self.heads[i], u);
        if self.batch {
            v["index"] = json!(i);
        }
        vec![v]
    }
}

/// What a response's meta_info says of its request besides the update.
#[derive(Debug, Clone)]
struct Head {
    rid: String,
    prompt_tokens: usize,
    seed: u64,
    /// `return_logprob` (with the tokens' text or not).
    logprobs: Option<bool>,
}

impl Head {
    fn of(r: &Running, logprobs: Option<bool>) -> Head {
        Head { rid: r.rid.clone(), prompt_tokens: r.prompt_tokens, seed: r.seed(), logprobs }
    }
}

fn generate_value(st: &AppState, head: &Head, u: &Update) -> Value {
    let mut meta = json!({
        "id": head.rid,
        "finish_reason": u.finish.as_ref().map(FinishKind::to_json),
        "prompt_tokens": head.prompt_tokens,
        "sampling_seed": head.seed,
        "completion_tokens": u.output_ids.len(),
        "cached_tokens": 0,
        "e2e_latency": u.e2e_latency,
        "blocks": u.blocks,
    });
    if let Some(s) = u.steps {
        meta["denoising_steps"] = json!(s);
    }
    if let Some(with_text) = head.logprobs {
        // SGLang's shape, [logprob, token id, text or null] per token, cumulative like `text`.
        // No input logprobs (see parse_logprobs): what SGLang answers for logprob_start_len -1.
        let texts = if with_text {
            token_texts(&st.tokenizer, &u.output_ids).into_iter().map(Value::from).collect()
        } else {
            vec![Value::Null; u.output_ids.len()]
        };
        let out: Vec<Value> = u.logprobs.iter().zip(&u.output_ids).zip(texts).map(|((lp, id), t)| json!([lp, id, t])).collect();
        meta["input_token_logprobs"] = json!([]);
        meta["output_token_logprobs"] = Value::Array(out);
    }
    json!({"text": u.text, "output_ids": u.output_ids, "meta_info": meta})
}

/// `/health_generate`: one token through the engine, within a deadline.
pub async fn health_generate(st: &Arc<AppState>) -> ApiResult<Resp> {
    let mut s = Sampling::new(st);
    s.params.max_new_tokens = 1;
    let prompt = vec![st.tokenizer.eos_id];
    let job = Job { prompt, sampling: s, rid: new_rid() };
    let run = submit(st, job, Instant::now()).await?;
    match tokio::time::timeout(std::time::Duration::from_secs(60), run.finish()).await {
        Ok(u) if !u.finish.as_ref().is_some_and(FinishKind::is_abort) => Ok(super::http::full(StatusCode::OK, "text/plain", "")),
        Ok(u) => Err(ApiError::unavailable(format!("generation failed: {:?}", u.finish))),
        Err(_) => Err(ApiError::unavailable("generation did not finish within 60 s")),
    }
}
