//! Cross-origin requests from browser pages (CORS). Off unless `--allowed-origins` names origins:
//! a server on a developer's machine should not be callable by every web page its browser opens.
//! When on, responses to an allowed origin carry `Access-Control-Allow-Origin`, and preflights
//! (`OPTIONS` with `Access-Control-Request-Method`) are answered here, before the API-key check,
//! since browsers send them without credentials.

use super::errors::ApiError;
use super::http::{full, Resp};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};

pub struct Cors {
    /// Exact origins (`scheme://host[:port]`), compared ignoring ASCII case.
    origins: Vec<String>,
    /// `*` was given: any origin.
    any: bool,
}

/// Methods the routes take.
const METHODS: &str = "GET, POST, OPTIONS";
/// Headers a browser may send when the preflight names none: the ones our clients set.
const HEADERS: &str = "authorization, content-type";
/// How long a browser may keep a preflight's answer (seconds).
const MAX_AGE: &str = "600";

impl Cors {
    pub fn new(allowed: &[String]) -> Self {
        Cors { any: allowed.iter().any(|o| o == "*"), origins: allowed.iter().filter(|o| *o != "*").cloned().collect() }
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`; None: not allowed.
    fn allowed(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin?;
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let o = origin.to_str().ok()?;
        self.origins.iter().any(|a| a.eq_ignore_ascii_case(o)).then(|| origin.clone())
    }

    /// Add the CORS headers a response to a request from `origin` needs (none when it is not
    /// allowed, or CORS is off).
    pub fn allow(&self, origin: Option<&HeaderValue>, resp: &mut Resp) {
        if let Some(v) = self.allowed(origin) {
            let echoed = v != "*";
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            if echoed {
                // The answer depends on the Origin header: caches must keep one per origin.
                h.append(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
    }

    /// The answer to a CORS preflight, when CORS is on and `req` is one: 204 with what the origin
    /// may do, or 403 for an origin not allowed. None: not a preflight (or CORS is off), route it.
    pub fn preflight(&self, req: &Request<Incoming>) -> Option<Resp> {
        let h = req.headers();
        let is_preflight = req.method() == Method::OPTIONS && h.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !is_preflight || (!self.any && self.origins.is_empty()) {
            return None;
        }
        let origin = h.get(header::ORIGIN);
        if self.allowed(origin).is_none() {
            let who = origin.and_then(|o| o.to_str().ok()).unwrap_or("(none)");
            return Some(ApiError::new(StatusCode::FORBIDDEN, format!("origin {who} is not allowed (--allowed-origins)")).response());
        }
        let mut r = full(StatusCode::NO_CONTENT, "text/plain", "");
        let asked = h.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
        let out = r.headers_mut();
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.unwrap_or(HeaderValue::from_static(HEADERS)));
        out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
        self.allow(origin, &mut r);
        Some(r)
    }
}
