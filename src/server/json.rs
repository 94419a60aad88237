//! Reading JSON request fields: a wrong type is a 400 that names the field (`at`).

use super::errors::{ApiError, ApiResult};
use serde_json::{Map, Value};

/// What a value is, as an error message says it ("a string", "null", ...).
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub fn as_f32(v: &Value, at: &str) -> ApiResult<f32> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .map(|x| x as f32)
        .ok_or_else(|| ApiError::bad_request(format!("{at} must be a number, got {}", kind(v))))
}

pub fn as_i64(v: &Value, at: &str) -> ApiResult<i64> {
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    if v.as_u64().is_some() {
        return Err(ApiError::bad_request(format!("{at} is too large")));
    }
    Err(ApiError::bad_request(format!("{at} must be an integer, got {}", describe(v))))
}

pub fn as_usize(v: &Value, at: &str) -> ApiResult<usize> {
    if let Some(u) = v.as_u64() {
        return Ok(usize::try_from(u).unwrap_or(usize::MAX));
    }
    if v.as_i64().is_some() {
        return Err(ApiError::bad_request(format!("{at} must be >= 0, got {v}")));
    }
    Err(ApiError::bad_request(format!("{at} must be a non-negative integer, got {}", describe(v))))
}

pub fn as_u32(v: &Value, at: &str) -> ApiResult<u32> {
    v.as_u64()
        .and_then(|u| u32::try_from(u).ok())
        .ok_or_else(|| ApiError::bad_request(format!("{at} must be a token id (an integer >= 0), got {}", describe(v))))
}

pub fn as_bool(v: &Value, at: &str) -> ApiResult<bool> {
    v.as_bool().ok_or_else(|| ApiError::bad_request(format!("{at} must be true or false, got {}", kind(v))))
}

/// A number as written, anything else by its kind.
fn describe(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("{n}"),
        other => kind(other).to_string(),
    }
}

pub fn as_object<'a>(v: &'a Value, at: &str) -> ApiResult<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| ApiError::bad_request(format!("{at} must be a JSON object, got {}", kind(v))))
}

/// A value that asks for nothing (absent, null, false, 0, "", [] or {}).
pub fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}
