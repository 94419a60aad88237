//! HTTP plumbing shared by every route: reading a body within its size limit, whole and
//! streaming (server-sent events) responses, and the API-key check.

use super::errors::{ApiError, ApiResult};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::time::Duration;

pub type Resp = Response<BoxBody<Bytes, Infallible>>;

/// The body as JSON: 413 past the size limit, 408 if the client sends nothing for `idle`
/// (`--idle-timeout`) before it ends, 400 if it does not parse.
pub async fn read_json(req: Request<Incoming>, limit: usize, idle: Duration) -> ApiResult<serde_json::Value> {
    if let Some(n) = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()) {
        if n > limit as u64 {
            return Err(ApiError::too_large(format!("request body of {n} bytes exceeds the limit of {limit} bytes")));
        }
    }
    let mut frames = Limited::new(req.into_body(), limit);
    let mut body = Vec::new();
    loop {
        // Dropping the unread body on an error makes hyper close the connection after the answer.
        let frame = match tokio::time::timeout(idle, frames.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the request body stalled: nothing arrived for {} s (--idle-timeout)", idle.as_secs_f64()),
                ))
            }
            Ok(None) => break,
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    return Err(ApiError::too_large(format!("request body exceeds the limit of {limit} bytes")));
                }
                return Err(ApiError::bad_request(format!("reading the request body failed: {e}")));
            }
        };
        if let Ok(data) = frame.into_data() {
            body.extend_from_slice(&data);
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty; send a JSON object"));
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// 401 unless the request carries `Authorization: Bearer <expected>` (no key set: anything goes).
pub fn check_api_key(expected: Option<&str>, req: &Request<Incoming>) -> ApiResult<()> {
    let Some(key) = expected else { return Ok(()) };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match given {
        None => Err(ApiError::unauthorized("missing API key: send `Authorization: Bearer <key>`")),
        Some(g) if !constant_time_eq(g.as_bytes(), key.as_bytes()) => Err(ApiError::unauthorized("invalid API key")),
        Some(_) => Ok(()),
    }
}

/// Compare without an early exit, so the time taken does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A whole response with this status, content type and body.
pub fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON response.
pub fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    full(status, "application/json", v.to_string())
}

/// A streaming body fed by a channel of ready-made chunks (server-sent events).
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// An SSE response and the sender that feeds it; the sender's `closed()` fires when the
/// client has gone (hyper dropped the body).
pub fn sse() -> (Resp, tokio::sync::mpsc::Sender<Bytes>) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut r = Response::new(ChannelBody { rx }.boxed());
    let h = r.headers_mut();
    h.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/event-stream"));
    h.insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-cache"));
    (r, tx)
}

/// One server-sent event carrying a JSON value.
pub fn sse_event(v: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// A server-sent event with its name (`event:`) before its data, as OpenAI's Responses API
/// streams them.
pub fn sse_named_event(name: &str, v: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

/// The event that ends a stream (OpenAI's convention, which SGLang's `/generate` follows too).
pub const SSE_DONE: &str = "data: [DONE]\n\n";
