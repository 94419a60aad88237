//! What every generation route shares: sampling parameters, submitting jobs to the engine
//! thread, and reading a running request as cumulative updates (text decoded, stop strings
//! applied), one per finished block.

use super::errors::{ApiError, ApiResult};
use super::http::{sse, sse_event, sse_named_event, Resp, SSE_DONE};
use super::json::{as_bool, as_f32, as_i64, as_u32, as_usize, kind};
use super::log::ignored_field;
use super::scheduler::{PendingSubmit, ReqEvent, SubmitError, Ticket};
use super::AppState;
use crate::decode::Knobs;
use crate::engine::{Finish, GenParams, Generated};
use crate::tokenizer::Tokenizer;
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc as tmpsc;

/// Sampling and decoding settings of one request, whatever API it came through.
#[derive(Debug, Clone)]
pub struct Sampling {
    pub params: GenParams,
    pub stop: Vec<String>,
    /// SGLang's `stop_regex`: (the pattern as given, compiled).
    pub stop_regex: Vec<(String, regex::Regex)>,
    pub skip_special: bool,
    pub no_stop_trim: bool,
    /// Independent samples of the prompt (SGLang's and OpenAI's `n`).
    pub n: usize,
}

/// The most samples one prompt may ask for (`n`), as OpenAI's API allows.
pub const MAX_N: usize = 128;
/// SGLang's bounds on `stop_regex`: patterns per request and bytes per pattern.
pub const MAX_STOP_REGEX: usize = 32;
pub const MAX_STOP_REGEX_LEN: usize = 256;
/// The most memory one compiled `stop_regex` (and its lazy DFA) may take: a pattern such as
/// `\w{1000}{1000}` fails to compile instead of eating the server's memory.
const STOP_REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Sampling {
    pub fn new(st: &AppState) -> Self {
        Sampling { params: st.default_params(), stop: vec![], stop_regex: vec![], skip_special: true, no_stop_trim: false, n: 1 }
    }

    /// Set one sampling field; `Ok(false)` when the name is not a sampling field at all.
    /// `at` names the field in error messages (e.g. "sampling_params.top_k").
    pub fn set(&mut self, key: &str, v: &Value, at: &str) -> ApiResult<bool> {
        // SGLang's own frontend sends every field it knows, unset ones as null or [] (e.g.
        // `"stop_regex": []`, `"regex": null`): those mean "unset", never an error.
        let known = KNOWN_SAMPLING.contains(&key) || IGNORED_SAMPLING.contains(&key) || UNSUPPORTED_SAMPLING.contains(&key);
        if known && (v.is_null() || v.as_array().is_some_and(|a| a.is_empty())) {
            return Ok(true);
        }
        let p = &mut self.params;
        match key {
            "temperature" => p.temperature = as_f32(v, at)?,
            "top_p" => p.top_p = as_f32(v, at)?,
            // Ranges are GenParams::validate's (a 400 from `check`).
            "min_p" => p.min_p = as_f32(v, at)?,
            "repetition_penalty" => p.repetition_penalty = as_f32(v, at)?,
            "presence_penalty" => p.presence_penalty = as_f32(v, at)?,
            "frequency_penalty" => p.frequency_penalty = as_f32(v, at)?,
            "top_k" => {
                let k = as_i64(v, at)?;
                if k < -1 {
                    return Err(ApiError::bad_request(format!("{at} must be -1 (off) or >= 0, got {k}")));
                }
                p.top_k = if k <= 0 { 0 } else { k as usize };
            }
            "max_new_tokens" => p.max_new_tokens = as_usize(v, at)?,
            "min_new_tokens" => p.min_new_tokens = as_usize(v, at)?,
            "stop" => {
                self.stop = strings(v, at)?;
                self.stop.retain(|s| !s.is_empty());
            }
            "stop_regex" => {
                let mut patterns = strings(v, at)?;
                // An empty pattern never stops (matches must be non-empty): unset, as in `stop`.
                patterns.retain(|p| !p.is_empty());
                if patterns.len() > MAX_STOP_REGEX {
                    return Err(ApiError::bad_request(format!("{at}: at most {MAX_STOP_REGEX} patterns, got {}", patterns.len())));
                }
                self.stop_regex = patterns
                    .into_iter()
                    .enumerate()
                    .map(|(i, pat)| compile_stop_regex(&pat, &format!("{at}[{i}]")).map(|re| (pat, re)))
                    .collect::<ApiResult<_>>()?;
            }
            "stop_token_ids" => {
                let a = v.as_array().ok_or_else(|| ApiError::bad_request(format!("{at} must be a list of token ids, got {}", kind(v))))?;
                p.stop_token_ids = a.iter().enumerate().map(|(i, t)| as_u32(t, &format!("{at}[{i}]"))).collect::<ApiResult<_>>()?;
            }
            "ignore_eos" => p.ignore_eos = as_bool(v, at)?,
            "skip_special_tokens" => self.skip_special = as_bool(v, at)?,
            "no_stop_trim" => self.no_stop_trim = as_bool(v, at)?,
            // The server's algorithm with this knob changed; a knob the algorithm does not read
            // is a 400 (it would otherwise do nothing).
            "threshold" | "edit_threshold" | "max_post_edit_steps" => {
                let knobs = match key {
                    "threshold" => Knobs { threshold: Some(as_f32(v, at)?), ..Knobs::default() },
                    "edit_threshold" => Knobs { edit_threshold: Some(as_f32(v, at)?), ..Knobs::default() },
                    _ => Knobs { max_post_edit_steps: Some(as_usize(v, at)?), ..Knobs::default() },
                };
                p.policy = p.policy.with_knobs(&knobs).map_err(|e| ApiError::bad_request(format!("{at}: {e}")))?;
            }
            "block_size" => p.block_size = as_usize(v, at)?,
            "steps" | "denoising_steps" => p.steps = Some(as_usize(v, at)?),
            "seed" | "sampling_seed" => p.seed = v.as_u64().map_or_else(|| as_i64(v, at).map(|s| s as u64), Ok)?,
            "n" => {
                self.n = as_usize(v, at)?;
                if !(1..=MAX_N).contains(&self.n) {
                    return Err(ApiError::bad_request(format!("{at} must be between 1 and {MAX_N}, got {}", self.n)));
                }
            }
            k if UNSUPPORTED_SAMPLING.contains(&k) => {
                return Err(ApiError::bad_request(format!("{at} is not supported by dllm (constrained decoding)")));
            }
            "logit_bias" => {
                let bias = v
                    .as_object()
                    .ok_or_else(|| ApiError::bad_request(format!("{at} must be an object of token id -> bias, got {}", kind(v))))?;
                p.logit_bias = bias
                    .iter()
                    .map(|(t, b)| {
                        let id = t.trim().parse::<u32>().map_err(|_| {
                            ApiError::bad_request(format!("{at}: key {t:?} is not a token id (an integer >= 0 written as a string)"))
                        })?;
                        Ok((id, as_f32(b, &format!("{at}.{t}"))?))
                    })
                    .collect::<ApiResult<_>>()?;
                // Ids outside the vocabulary are GenParams::validate's 400.
                p.logit_bias.sort_unstable_by_key(|&(t, _)| t);
            }
            k if IGNORED_SAMPLING.contains(&k) => {
                ignored_field(at);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The server's own limits (block size, context), then `GenParams::validate`, so a bad request
    /// is a 400 before it is queued.
    pub fn check(&self, st: &AppState) -> ApiResult<()> {
        let p = &self.params;
        if p.block_size == 0 || p.block_size > st.settings.block_size {
            return Err(ApiError::bad_request(format!(
                "block_size must be between 1 and the server's --diffusion-block-size ({}), got {}",
                st.settings.block_size, p.block_size
            )));
        }
        p.validate(st.vocab_size).map_err(ApiError::bad_request)?;
        if p.max_new_tokens > st.context_len {
            return Err(ApiError::bad_request(format!(
                "max_new_tokens ({}) exceeds the context length ({})",
                p.max_new_tokens, st.context_len
            )));
        }
        Ok(())
    }
}

const KNOWN_SAMPLING: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "max_new_tokens",
    "min_new_tokens",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "skip_special_tokens",
    "no_stop_trim",
    "threshold",
    "edit_threshold",
    "max_post_edit_steps",
    "block_size",
    "steps",
    "denoising_steps",
    "seed",
    "sampling_seed",
    "n",
    "logit_bias",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "stop_regex",
];
/// SGLang sampling fields that change nothing here; accepted with a warning.
const IGNORED_SAMPLING: &[&str] = &["spaces_between_special_tokens", "custom_params", "stream_interval", "lora_path"];
/// SGLang sampling fields whose promise we cannot keep: refused when set.
const UNSUPPORTED_SAMPLING: &[&str] = &["json_schema", "regex", "ebnf", "structural_tag"];

/// A string or a list of strings (`stop`, `stop_regex`).
fn strings(v: &Value, at: &str) -> ApiResult<Vec<String>> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str().map(str::to_string).ok_or_else(|| ApiError::bad_request(format!("{at}[{i}] must be a string, got {}", kind(s))))
            })
            .collect(),
        other => Err(ApiError::bad_request(format!("{at} must be a string or a list of strings, got {}", kind(other)))),
    }
}

/// One `stop_regex` pattern, bounded in length and in compiled size.
fn compile_stop_regex(pattern: &str, at: &str) -> ApiResult<regex::Regex> {
    if pattern.len() > MAX_STOP_REGEX_LEN {
        return Err(ApiError::bad_request(format!("{at} is {} bytes; a stop_regex may have at most {MAX_STOP_REGEX_LEN}", pattern.len())));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(STOP_REGEX_SIZE_LIMIT)
        .dfa_size_limit(STOP_REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ApiError::bad_request(format!("{at} is not a valid regex: {e}")))
}

/// Where the earliest stop string or `stop_regex` match begins and ends in `text`, and how it
/// ends the request. A regex match must be non-empty (`a*` matches nothing until an `a`).
fn first_stop(s: &Sampling, text: &str) -> Option<(usize, usize, FinishKind)> {
    let strs = s.stop.iter().filter_map(|p| text.find(p.as_str()).map(|i| (i, i + p.len(), FinishKind::StopStr(p.clone()))));
    let regexes = s
        .stop_regex
        .iter()
        .filter_map(|(p, re)| re.find_iter(text).find(|m| !m.is_empty()).map(|m| (m.start(), m.end(), FinishKind::StopRegex(p.clone()))));
    strs.chain(regexes).min_by_key(|&(i, _, _)| i)
}

/// `text` without its trailing U+FFFD: tokens that end inside a character decode to one until
/// the next token completes it, so until the last update that tail is not text yet.
pub(super) fn settled(text: &str) -> &str {
    text.trim_end_matches('\u{fffd}')
}

/// How many bytes at the end of `text` may still become the start of a stop string. A stop
/// string can begin in one block and end in the next, and a stream cannot take back text it has
/// sent, so a block's update holds this tail back until the next block decides it (vLLM holds
/// back its streams' tails for the same reason): the unsettled U+FFFD tail (any character to
/// come), and before it the longest tail that begins one of the `stops` without completing it.
/// (A tail beginning a stop that holds U+FFFD itself is no longer: its settled part begins the
/// stop too.)
fn stop_prefix_tail(text: &str, stops: &[String]) -> usize {
    if stops.is_empty() {
        return 0;
    }
    let done = settled(text);
    let begins_stop = stops.iter().filter_map(|p| (1..p.len()).rev().find(|&k| p.is_char_boundary(k) && done.ends_with(&p[..k]))).max();
    text.len() - done.len() + begins_stop.unwrap_or(0)
}

/// One prompt ready for the engine.
#[derive(Debug, Clone)]
pub struct Job {
    pub prompt: Vec<u32>,
    pub sampling: Sampling,
    pub rid: String,
}

/// Each job `n` times (its `sampling.n`), in order: job i's samples stay together, as SGLang
/// and OpenAI number them. Sample j draws with seed + j, and its rid gets `-j` when n > 1.
pub fn expand_n(jobs: Vec<Job>) -> Vec<Job> {
    let mut out = Vec::with_capacity(jobs.iter().map(|j| j.sampling.n).sum());
    for job in jobs {
        let n = job.sampling.n;
        if n == 1 {
            out.push(job);
            continue;
        }
        for j in 0..n {
            let mut s = job.sampling.clone();
            s.params.seed = s.params.seed.wrapping_add(j as u64);
            s.n = 1;
            out.push(Job { prompt: job.prompt.clone(), sampling: s, rid: format!("{}-{j}", job.rid) });
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
pub enum FinishKind {
    StopToken(u32),
    StopStr(String),
    /// A `stop_regex` matched; the pattern (SGLang reports the pattern, not the text).
    StopRegex(String),
    Length(usize),
    /// The request failed (engine error, shutdown).
    Abort(String),
    /// `/abort_request` ended it: what it had generated so far is its answer.
    Aborted(String),
    /// The server is shutting down (a 503: the client may retry elsewhere).
    Unavailable(String),
}

impl FinishKind {
    /// SGLang's `meta_info.finish_reason`.
    pub fn to_json(&self) -> Value {
        match self {
            FinishKind::StopToken(t) => json!({"type": "stop", "matched": t}),
            FinishKind::StopStr(s) | FinishKind::StopRegex(s) => json!({"type": "stop", "matched": s}),
            FinishKind::Length(n) => json!({"type": "length", "length": n}),
            FinishKind::Abort(m) | FinishKind::Aborted(m) | FinishKind::Unavailable(m) => json!({"type": "abort", "message": m}),
        }
    }
    /// OpenAI's `finish_reason`.
    pub fn openai(&self) -> &'static str {
        match self {
            FinishKind::StopToken(_) | FinishKind::StopStr(_) | FinishKind::StopRegex(_) => "stop",
            FinishKind::Length(_) => "length",
            FinishKind::Abort(_) | FinishKind::Aborted(_) | FinishKind::Unavailable(_) => "abort",
        }
    }
    /// The error a request that ended this way answers with instead of its body, naming the
    /// request: a failure is a 500, a shutdown a 503; every other end (an `/abort_request` too)
    /// is an answer.
    pub fn error(&self, rid: &str) -> Option<ApiError> {
        match self {
            FinishKind::Abort(m) => Some(ApiError::internal(format!("request {rid} failed: {m}"))),
            FinishKind::Unavailable(m) => Some(ApiError::unavailable(m.clone())),
            _ => None,
        }
    }
    /// The request ended without its answer (failed, aborted or cut by shutdown).
    pub fn is_abort(&self) -> bool {
        matches!(self, FinishKind::Abort(_) | FinishKind::Aborted(_) | FinishKind::Unavailable(_))
    }
    pub fn matched(&self) -> Value {
        match self {
            FinishKind::StopToken(t) => json!(t),
            FinishKind::StopStr(s) | FinishKind::StopRegex(s) => json!(s),
            _ => Value::Null,
        }
    }
}

/// The state of a request after a finished block: everything so far (cumulative).
#[derive(Debug, Clone)]
pub struct Update {
    pub output_ids: Vec<u32>,
    /// Per output token: ln of the probability it had when it was unmasked.
    pub logprobs: Vec<f32>,
    pub text: String,
    pub finish: Option<FinishKind>,
    pub steps: Option<usize>,
    pub blocks: usize,
    pub e2e_latency: f64,
}

/// A request inside the engine, read block by block.
pub struct Running {
    ticket: Option<Ticket>,
    st: Arc<AppState>,
    pub rid: String,
    pub prompt_tokens: usize,
    sampling: Sampling,
    started: Instant,
    blocks: usize,
    finished: bool,
    /// The tokens of the last finished block's update (an aborted request answers with them).
    last: Generated,
}

static RID: AtomicU64 = AtomicU64::new(1);

pub fn new_rid() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    format!("{:016x}{:016x}", t, RID.fetch_add(1, Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Queue a job on the engine thread: 400 if the engine refuses it, 503 if the server is full.
pub async fn submit(st: &Arc<AppState>, job: Job, started: Instant) -> ApiResult<Running> {
    send(st, job, started)?.accepted().await
}

/// A job sent to the engine thread, its verdict not yet read.
pub struct PendingRun {
    pending: PendingSubmit,
    run: Running,
}

/// Check a job and send it to the engine thread without waiting for the verdict.
fn send(st: &Arc<AppState>, job: Job, started: Instant) -> ApiResult<PendingRun> {
    st.metrics.requests.fetch_add(1, Relaxed);
    job.sampling.check(st).inspect_err(|_| {
        st.metrics.requests_rejected.fetch_add(1, Relaxed);
    })?;
    let prompt_tokens = job.prompt.len();
    let pending = st.sched.send(job.rid.clone(), job.prompt, job.sampling.params.clone()).map_err(|e| submit_error(st, e))?;
    let run = Running {
        ticket: None,
        st: st.clone(),
        rid: job.rid,
        prompt_tokens,
        sampling: job.sampling,
        started,
        blocks: 0,
        finished: false,
        last: Generated::default(),
    };
    Ok(PendingRun { pending, run })
}

impl PendingRun {
    async fn accepted(self) -> ApiResult<Running> {
        let PendingRun { pending, mut run } = self;
        run.ticket = Some(pending.accepted().await.map_err(|e| submit_error(&run.st, e))?);
        Ok(run)
    }
}

fn submit_error(st: &AppState, e: SubmitError) -> ApiError {
    st.metrics.requests_rejected.fetch_add(1, Relaxed);
    match e {
        SubmitError::Invalid(m) => ApiError::bad_request(m),
        e @ (SubmitError::QueueFull { .. } | SubmitError::Stopped) => ApiError::unavailable(e.to_string()),
    }
}

impl Running {
    /// The request's sampling seed (its own, or the one drawn for it).
    pub fn seed(&self) -> u64 {
        self.sampling.params.seed
    }
    /// The next update: one per finished block, the last one with `finish` set; then None.
    pub async fn next(&mut self) -> Option<Update> {
        if self.finished {
            return None;
        }
        let ev = match self.ticket.as_mut() {
            Some(t) => t.events.recv().await,
            None => None,
        };
        let u = match ev {
            Some(ReqEvent::Block { generated }) => {
                self.last.clone_from(&generated);
                self.update(generated, None, None)
            }
            Some(ReqEvent::Done(out)) => {
                let fin = match out.finish {
                    Finish::Stop(t) => FinishKind::StopToken(t),
                    Finish::Length => FinishKind::Length(self.sampling.params.max_new_tokens),
                };
                self.update(Generated { ids: out.output_ids, probs: out.output_probs }, Some(fin), Some(out.steps))
            }
            Some(ReqEvent::Failed(e)) => self.update(Generated::default(), Some(FinishKind::Abort(e)), None),
            Some(ReqEvent::ShuttingDown) => {
                let last = std::mem::take(&mut self.last);
                self.update(last, Some(FinishKind::Unavailable("the server is shutting down".into())), None)
            }
            Some(ReqEvent::Aborted(why)) => {
                let last = std::mem::take(&mut self.last);
                self.update(last, Some(FinishKind::Aborted(why)), None)
            }
            None => self.update(Generated::default(), Some(FinishKind::Abort("the engine dropped the request".into())), None),
        };
        if u.finish.is_some() {
            self.finished = true;
            let ok = !u.finish.as_ref().is_some_and(FinishKind::is_abort);
            if let Some(mut t) = self.ticket.take() {
                // Done/Failed: the engine is through with it. A stop string: cancel it (Drop).
                if !matches!(u.finish, Some(FinishKind::StopStr(_) | FinishKind::StopRegex(_))) {
                    t.mark_done();
                }
            }
            if ok {
                self.st.metrics.e2e_latency.observe(u.e2e_latency);
            }
        }
        Some(u)
    }

    /// Run to the end; the final update.
    pub async fn finish(mut self) -> Update {
        let mut last = None;
        while let Some(u) = self.next().await {
            last = Some(u);
        }
        last.unwrap_or(Update {
            output_ids: vec![],
            logprobs: vec![],
            text: String::new(),
            finish: Some(FinishKind::Abort("no output".into())),
            steps: None,
            blocks: 0,
            e2e_latency: 0.0,
        })
    }

    fn update(&mut self, generated: Generated, mut finish: Option<FinishKind>, steps: Option<usize>) -> Update {
        let Generated { mut ids, probs } = generated;
        if !finish.as_ref().is_some_and(FinishKind::is_abort) {
            self.blocks += 1;
            if self.blocks == 1 {
                self.st.metrics.first_block_latency.observe(self.started.elapsed().as_secs_f64());
            }
        }
        let tok = &self.st.tokenizer;
        let s = &self.sampling;
        let mut text = tok.decode(&ids, s.skip_special);
        // Stop strings and stop_regex: the earliest match ends the request; its text is trimmed
        // (SGLang's default), and the tokens end with the first one whose text completes a match.
        // Only settled text is matched: tokens that end inside a character decode to a trailing
        // U+FFFD until the next token completes it (a stop holding U+FFFD would match it), so a
        // trailing U+FFFD counts only in the last update's whole text. (A stop string that ends
        // in a real U+FFFD then ends the tokens one later, or not before the last update.)
        let last = finish.is_some();
        let matched_len = |t: &str, whole: bool| if whole { t.len() } else { settled(t).len() };
        if let Some((start, end, why)) = first_stop(s, &text[..matched_len(&text, last)]) {
            let completes = |k: usize| {
                let t = tok.decode(&ids[..k], s.skip_special);
                first_stop(s, &t[..matched_len(&t, last && k == ids.len())]).is_some()
            };
            if let Some(k) = (1..=ids.len()).find(|&k| completes(k)) {
                ids.truncate(k);
            }
            text.truncate(if s.no_stop_trim { end } else { start });
            finish = Some(why);
        } else if finish.is_none() && !s.no_stop_trim {
            // Untrimmed (no_stop_trim), a match would keep the tail: nothing to hold then. A
            // stop_regex match across blocks is not foreseen (the regex crate has no prefix
            // match); SERVING.md says so.
            text.truncate(text.len() - stop_prefix_tail(&text, &s.stop));
        }
        // A pick's probability is a softmax share, > 0; the floor keeps ln finite (JSON has no -inf).
        let logprobs = probs.iter().take(ids.len()).map(|&p| p.max(f32::MIN_POSITIVE).ln()).collect();
        Update { output_ids: ids, logprobs, text, finish, steps, blocks: self.blocks, e2e_latency: self.started.elapsed().as_secs_f64() }
    }
}

/// Run every request, forwarding `(index, update)`; a forwarder stops (and its request is
/// cancelled) as soon as the receiver is dropped.
pub fn forward_all(runs: Vec<Running>) -> tmpsc::UnboundedReceiver<(usize, Update)> {
    let (tx, rx) = tmpsc::unbounded_channel();
    for (i, mut r) in runs.into_iter().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    u = r.next() => match u {
                        Some(u) => {
                            if tx.send((i, u)).is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                    _ = tx.closed() => break,
                }
            }
        });
    }
    rx
}

/// How a route writes its stream of server-sent events: what comes before the updates, the
/// event for each update, and what comes after the last one (before `[DONE]`).
pub trait StreamFormat: Send + 'static {
    /// Events before any update.
    fn opening(&mut self) -> Vec<Value> {
        Vec::new()
    }
    /// The events for update `u` of request `i` (its index in the batch).
    fn update(&mut self, i: usize, u: &Update) -> Vec<Value>;
    /// Events after every request has finished.
    fn closing(&mut self) -> Vec<Value> {
        Vec::new()
    }
    /// The SSE event name of `v` (an `event:` line before its data), if the format names them.
    fn event_name<'a>(&self, _v: &'a Value) -> Option<&'a str> {
        None
    }
    /// Whether the stream ends with `data: [DONE]` (OpenAI's chat and completions, SGLang's
    /// `/generate`); OpenAI's Responses API ends with its last event instead.
    fn ends_with_done(&self) -> bool {
        true
    }
}

/// Stream every request's updates as server-sent events, written by `format`, then (where the
/// format ends so) `[DONE]`. When the client goes away the stream stops, and with it the
/// forwarders: their requests are cancelled.
pub fn stream_sse(runs: Vec<Running>, mut format: impl StreamFormat) -> Resp {
    let (resp, tx) = sse();
    let mut rx = forward_all(runs);
    tokio::spawn(async move {
        let frame = |f: &dyn StreamFormat, v: &Value| match f.event_name(v) {
            Some(name) => sse_named_event(name, v),
            None => sse_event(v),
        };
        for v in format.opening() {
            if tx.send(frame(&format, &v)).await.is_err() {
                return;
            }
        }
        loop {
            let (i, u) = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => break },
                _ = tx.closed() => return,
            };
            for v in format.update(i, &u) {
                if tx.send(frame(&format, &v)).await.is_err() {
                    return;
                }
            }
        }
        for v in format.closing() {
            if tx.send(frame(&format, &v)).await.is_err() {
                return;
            }
        }
        if format.ends_with_done() {
            let _ = tx.send(Bytes::from_static(SSE_DONE.as_bytes())).await;
        }
    });
    resp
}

/// Submit every job, or none: on an error the ones already queued are cancelled (dropped).
pub async fn submit_all(st: &Arc<AppState>, jobs: Vec<Job>, started: Instant) -> ApiResult<Vec<Running>> {
    let batch = jobs.len() > 1;
    let name = |i: usize, mut e: ApiError| {
        if batch && e.status == StatusCode::BAD_REQUEST {
            e.message = format!("prompt {i}: {}", e.message);
        }
        e
    };
    // Every job is sent before any verdict is awaited: the engine thread reads them all in one
    // go. On an error the jobs already sent are dropped, which cancels them.
    let pending: Vec<PendingRun> =
        jobs.into_iter().enumerate().map(|(i, j)| send(st, j, started).map_err(|e| name(i, e))).collect::<ApiResult<_>>()?;
    let mut runs = Vec::with_capacity(pending.len());
    for (i, p) in pending.into_iter().enumerate() {
        runs.push(p.accepted().await.map_err(|e| name(i, e))?);
    }
    Ok(runs)
}

/// Each token's own text (special tokens included), as logprobs name their tokens.
pub fn token_texts(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&t| tok.decode(&[t], false)).collect()
}

/// A prompt's tokens: 400 if it is empty, longer in bytes than the context could hold in tokens
/// (checked before tokenizing: see `limits.rs`), or encodes to nothing. The text is tokenized on
/// the server's tokenizer pool, which the calling async worker does not wait on.
pub fn encode(st: &AppState, text: &str, at: &str) -> ApiResult<Vec<u32>> {
    if text.is_empty() {
        return Err(ApiError::bad_request(format!("{at} is empty")));
    }
    st.limits.check_text(text, at)?;
    let ids = st.tokenize.encode(text).map_err(|e| ApiError::bad_request(format!("{at}: {e:#}")))?;
    if ids.is_empty() {
        return Err(ApiError::bad_request(format!("{at} encodes to no tokens")));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::stop_prefix_tail;

    #[test]
    fn the_held_tail_is_the_longest_unfinished_beginning_of_a_stop_string() {
        let stops = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(stop_prefix_tail("hello wor", &stops(&["world"])), 3);
        assert_eq!(stop_prefix_tail("hello w", &stops(&["xyz", "world", "w"])), 1);
        assert_eq!(stop_prefix_tail("hel", &stops(&["lo"])), 1);
        // A whole stop string is a match, not a beginning (the caller has matched it first).
        assert_eq!(stop_prefix_tail("hello", &stops(&["lo"])), 0);
        assert_eq!(stop_prefix_tail("hello", &stops(&["abc", ""])), 0);
        assert_eq!(stop_prefix_tail("", &stops(&["abc"])), 0);
        // The longest of several stops' beginnings, on character boundaries.
        assert_eq!(stop_prefix_tail("say é", &stops(&["ép", " éa"])), " é".len());
        assert_eq!(stop_prefix_tail("x\u{e9}", &stops(&["\u{e9}\u{e8}"])), 2);
        // A trailing U+FFFD (a character cut by the block's end) is held with what it may extend.
        assert_eq!(stop_prefix_tail("abf\u{fffd}", &stops(&["f\u{68d}f"])), 1 + 3);
        assert_eq!(stop_prefix_tail("ab\u{fffd}\u{fffd}", &stops(&["zz"])), 6);
        assert_eq!(stop_prefix_tail("ab\u{fffd}", &[]), 0);
        // A stop string holding U+FFFD itself is matched as written too.
        assert_eq!(stop_prefix_tail("a@\u{fffd}", &stops(&["@\u{fffd}x"])), 4);
    }
}
