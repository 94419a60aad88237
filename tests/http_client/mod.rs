//! The servers the end-to-end tests talk to (the tiny model on the CPU backend, a loopback
//! port) and a small HTTP/1.1 client for them, with no extra dependencies.
#![allow(dead_code)]

use dllm::server::{self, RunningServer, ServeArgs};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PROMPT: &str = "<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>Why did Camus say that Sisyphus was happy?<|role_end|><role>ASSISTANT</role>";

pub fn model_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("dllm-server-test-{}", std::process::id()));
        if !d.join("config.json").exists() {
            dllm::make_model::make_model("tiny", &d, 0).expect("making the tiny model");
        }
        d
    })
    .clone()
}

pub async fn serve(extra: &[&str]) -> RunningServer {
    let dir = model_dir();
    let mut args = vec!["serve", "--model-path", dir.to_str().unwrap(), "--port", "0", "--device", "cpu", "--log-level", "error"];
    args.extend_from_slice(extra);
    server::start(ServeArgs::parse_from(args).unwrap()).await.expect("server starts")
}

// ------------------------------------------------------------------------------------------
// A small HTTP/1.1 client.

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// The `data:` payloads of a server-sent event stream.
    pub fn events(&self) -> Vec<String> {
        sse_payloads(&self.text())
    }
}

pub fn sse_payloads(s: &str) -> Vec<String> {
    s.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_string).collect()
}

pub fn head(method: &str, path: &str, headers: &[(&str, &str)], body_len: Option<usize>) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(n) = body_len {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {n}\r\n"));
    }
    req.push_str("\r\n");
    req
}

pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head(method, path, headers, body.map(<[u8]>::len)).as_bytes()).await.unwrap();
    if let Some(b) = body {
        // The server may answer (413) and close before reading it all.
        let _ = s.write_all(b).await;
    }
    let mut raw = vec![];
    let _ = s.read_to_end(&mut raw).await;
    parse_reply(&raw)
}

pub fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply { status, headers, body }
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        let start = i + 2;
        out.extend_from_slice(&b[start..(start + n).min(b.len())]);
        b = &b[(start + n + 2).min(b.len())..];
    }
    out
}

pub async fn post(addr: SocketAddr, path: &str, v: &Value) -> Reply {
    request(addr, "POST", path, &[], Some(v.to_string().as_bytes())).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], None).await
}

/// Open a streaming request and read until its first event (or the head, for `events = 0`).
pub async fn open_stream(addr: SocketAddr, v: &Value, events: usize) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = v.to_string();
    s.write_all(head("POST", "/generate", &[], Some(body.len())).as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = tokio::time::timeout(deadline - Instant::now(), s.read(&mut buf)).await.expect("stream stalled").unwrap();
        assert!(n > 0, "stream closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if seen.contains("\r\n\r\n") && seen.matches("data: ").count() >= events {
            return (s, seen);
        }
    }
}

pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    metric_in(&get(addr, "/metrics").await.text(), name)
}

/// The value of `name` in a `/metrics` text (to read several from one scrape).
pub fn metric_in(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .trim()
        .parse()
        .unwrap()
}

pub async fn wait_metric(addr: SocketAddr, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = metric(addr, name).await;
        if ok(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} stuck at {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn assert_error(r: &Reply, status: u16, needle: &str) {
    assert_eq!(r.status, status, "body: {}", r.text());
    let v = r.json();
    let msg = v["error"]["message"].as_str().unwrap_or_else(|| panic!("no error.message in {v}"));
    assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
    assert_eq!(v["error"]["code"], json!(status), "{v}");
    assert!(v["error"]["type"].is_string(), "{v}");
}
