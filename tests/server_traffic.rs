//! Hostile or careless traffic (issue 11): prompts too long for any context, requests holding
//! many prompts, connections that send nothing or half a head, the connection cap, CORS.
//! The real server on a loopback port with the tiny model (tests/http_client); every wait is
//! bounded.

use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod http_client;
use http_client::*;

/// Read until the server closes the connection (at most `limit`); what it sent, and when.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let t0 = Instant::now();
    let mut got = vec![];
    let r = tokio::time::timeout(limit, s.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "the server kept the connection open for {limit:?}; it sent {:?}", String::from_utf8_lossy(&got));
    (got, t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_longer_than_the_context_can_hold_are_refused_by_their_bytes() {
    let srv = serve(&["--threshold", "0"]).await;
    let a = srv.addr;
    let huge = "a".repeat(1 << 20);
    let t0 = Instant::now();
    let r = post(a, "/generate", &json!({"text": huge, "sampling_params": {"max_new_tokens": 1}})).await;
    assert_error(&r, 400, "text has 1048576 bytes, more than any prompt the context can hold");
    let r = post(a, "/generate", &json!({"text": ["hi", huge], "sampling_params": {"max_new_tokens": 1}})).await;
    assert_error(&r, 400, "text[1] has 1048576 bytes");
    let r = post(a, "/v1/completions", &json!({"prompt": ["hi", huge], "max_tokens": 1})).await;
    assert_error(&r, 400, "prompt[1] has 1048576 bytes");
    // Chat: the messages together, before the template renders them.
    let half = "b".repeat(1 << 19);
    let msgs = json!([{"role": "system", "content": half}, {"role": "user", "content": [{"type": "text", "text": half}]}]);
    let r = post(a, "/v1/chat/completions", &json!({"messages": msgs, "max_tokens": 1})).await;
    assert_error(&r, 400, "messages has 1048576 bytes");
    // Nothing was tokenized or queued: the answers were immediate.
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(metric(a, "dllm:num_requests_total").await, 0.0);
    // The bound names its reason: the context length times the longest token's bytes.
    let v = get(a, "/get_model_info").await.json();
    let ctx = v["context_length"].as_u64().unwrap();
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains(&format!("{ctx} tokens of at most")), "{msg}");
    // A prompt under the bound is tokenized and checked against the context as before.
    let r = post(a, "/generate", &json!({"text": "a".repeat(20_000), "sampling_params": {"max_new_tokens": 1}})).await;
    assert_error(&r, 400, "context");
    let r = post(a, "/generate", &json!({"text": PROMPT, "sampling_params": {"max_new_tokens": 4}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    srv.shutdown().await;
}

/// Tokenizing on the async workers stalls every connection they serve; here there is one
/// worker, and `/health` must answer while requests with long prompts are being tokenized. The
/// tokenizing must last long enough that a stalled worker would show (400 ms): a round that ends
/// sooner (a fast machine) is run again with twice the requests.
#[test]
fn health_answers_while_long_prompts_are_tokenized() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        let srv = serve(&["--threshold", "0"]).await;
        let a = srv.addr;
        // Prompts a little under the byte bound (too many tokens for the context: 400 after
        // tokenizing, which is the work measured here).
        let long: Vec<String> = (0..8).map(|i| format!("{i} ").repeat(20_000)).collect();
        let mut requests = 4;
        loop {
            let t0 = Instant::now();
            let senders: Vec<_> = (0..requests)
                .map(|_| {
                    let body = json!({"text": long, "sampling_params": {"max_new_tokens": 1}});
                    tokio::spawn(async move { post(a, "/generate", &body).await.status })
                })
                .collect();
            let mut worst = Duration::ZERO;
            let mut probes = 0;
            while !senders.iter().all(|s| s.is_finished()) {
                assert!(t0.elapsed() < Duration::from_secs(60), "the requests did not finish");
                let p = Instant::now();
                assert_eq!(get(a, "/health").await.status, 200);
                worst = worst.max(p.elapsed());
                probes += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let busy = t0.elapsed();
            for s in senders {
                assert_eq!(s.await.unwrap(), 400);
            }
            eprintln!("{requests} requests: tokenizing {busy:?}, /health at worst {worst:?} over {probes} probes");
            if busy <= Duration::from_millis(400) {
                assert!(requests < 64, "{requests} requests' tokenizing took only {busy:?}: make the prompts longer");
                requests *= 2;
                continue;
            }
            assert!(worst < Duration::from_millis(250), "/health took {worst:?} (of {probes} probes over {busy:?}, {requests} requests)");
            break;
        }
        srv.shutdown().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_holds_at_most_max_prompts_per_request() {
    let srv = serve(&["--threshold", "0", "--max-prompts-per-request", "3"]).await;
    let a = srv.addr;
    let sp = json!({"max_new_tokens": 4});
    let r = post(a, "/generate", &json!({"text": ["a", "b", "c", "d"], "sampling_params": sp})).await;
    assert_error(&r, 400, "the request holds 4 prompts; at most 3 are allowed per request (--max-prompts-per-request)");
    let r = post(a, "/generate", &json!({"input_ids": [[1], [2], [3], [4]], "sampling_params": sp})).await;
    assert_error(&r, 400, "--max-prompts-per-request");
    let r = post(a, "/v1/completions", &json!({"prompt": ["a", "b", "c", "d"], "max_tokens": 4})).await;
    assert_error(&r, 400, "--max-prompts-per-request");
    let r = post(a, "/v1/completions", &json!({"prompt": [[1], [2], [3], [4]], "max_tokens": 4})).await;
    assert_error(&r, 400, "--max-prompts-per-request");
    // n samples of a prompt are n sequences in the queue: the cap counts them.
    let r = post(a, "/generate", &json!({"text": ["a", "b"], "sampling_params": {"max_new_tokens": 4, "n": 2}})).await;
    assert_error(&r, 400, "the request holds 2 prompts x n = 2 samples (4 sequences); at most 3");
    let r = post(a, "/v1/completions", &json!({"prompt": "a", "n": 4, "max_tokens": 4})).await;
    assert_error(&r, 400, "--max-prompts-per-request");
    let r = post(a, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "a"}], "n": 4, "max_tokens": 4})).await;
    assert_error(&r, 400, "--max-prompts-per-request");
    assert_eq!(metric(a, "dllm:num_requests_total").await, 0.0);
    let r = post(a, "/generate", &json!({"text": ["a", "b", "c"], "sampling_params": sp})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_many_prompt_request_takes_turns_with_later_requests() {
    // One running slot, two blocks a prompt: the big request's prompts all wait in the queue.
    let srv = serve(&["--threshold", "0", "--max-running-requests", "1"]).await;
    let a = srv.addr;
    let sp = json!({"temperature": 0, "max_new_tokens": 64, "ignore_eos": true});
    let many = vec!["Hello"; 128];
    let t0 = Instant::now();
    let body = json!({"text": many, "sampling_params": sp});
    let big = tokio::spawn(async move {
        let r = post(a, "/generate", &body).await;
        (r.status, t0.elapsed())
    });
    wait_metric(a, "dllm:num_queue_reqs", |q| q >= 48.0).await;
    let t1 = Instant::now();
    let small = post(a, "/generate", &json!({"text": "Hi", "sampling_params": sp})).await;
    let small_took = t1.elapsed();
    assert_eq!(small.status, 200, "{}", small.text());
    // First come first served would have run all of the big request's prompts first.
    let left = metric(a, "dllm:num_queue_reqs").await;
    let (status, big_took) = tokio::time::timeout(Duration::from_secs(120), big).await.expect("the big request finished").unwrap();
    assert_eq!(status, 200);
    assert!(left >= 16.0, "only {left} of the big request's prompts were still waiting when the small one finished");
    assert!(small_took * 8 < big_took, "the small request took {small_took:?}, the big one {big_took:?}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_many_prompt_request_reaches_the_queue_at_once() {
    // Its prompts are sent together, not one per engine step (a 1,000-prompt request took
    // ~1,000 steps just to be queued): by the time the queue holds them all, only a few steps ran.
    let srv = serve(&["--threshold", "0", "--max-running-requests", "1"]).await;
    let a = srv.addr;
    let sp = json!({"temperature": 0, "max_new_tokens": 64, "ignore_eos": true});
    let body = json!({"text": vec!["Hello"; 200], "sampling_params": sp});
    let big = tokio::spawn(async move { post(a, "/generate", &body).await.status });
    let deadline = Instant::now() + Duration::from_secs(30);
    let (queued, steps) = loop {
        let m = get(a, "/metrics").await.text();
        let (queued, steps) = (metric_in(&m, "dllm:num_queue_reqs"), metric_in(&m, "dllm:denoising_steps_total"));
        if queued >= 190.0 || Instant::now() > deadline {
            break (queued, steps);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(queued >= 190.0, "the queue never held the request's prompts ({queued})");
    assert!(steps < 100.0, "{steps} engine steps ran before the request's prompts were queued");
    big.abort();
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_nothing_or_half_a_head_are_closed() {
    let srv = serve(&["--header-read-timeout", "0.5"]).await;
    let a = srv.addr;
    let t0 = Instant::now();
    let mut silent = TcpStream::connect(a).await.unwrap();
    let mut half = TcpStream::connect(a).await.unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").await.unwrap();
    for (what, s) in [("silent", &mut silent), ("half a head", &mut half)] {
        let (got, _) = read_until_closed(s, Duration::from_secs(10)).await;
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(400), "{what}: closed after {took:?}, before the timeout");
        assert!(got.is_empty() || got.starts_with(b"HTTP/1.1 408"), "{what}: {:?}", String::from_utf8_lossy(&got));
    }
    // A kept-alive connection that sends nothing after its answer is closed too.
    let mut kept = TcpStream::connect(a).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let (got, _) = read_until_closed(&mut kept, Duration::from_secs(10)).await;
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_gets_408() {
    let srv = serve(&["--idle-timeout", "0.5"]).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(head("POST", "/generate", &[], Some(100)).as_bytes()).await.unwrap();
    s.write_all(br#"{"text": "#).await.unwrap();
    let (got, took) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    let r = parse_reply(&got);
    assert_error(&r, 408, "--idle-timeout");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_connection_cap_reached_health_still_answers() {
    let srv = serve(&["--threshold", "0", "--max-connections", "4", "--header-read-timeout", "60"]).await;
    let a = srv.addr;
    let mut idle = vec![];
    for _ in 0..4 {
        idle.push(TcpStream::connect(a).await.unwrap());
    }
    // /metrics is answered from the reserve too.
    wait_metric(a, "dllm:num_open_connections", |n| n == 4.0).await;
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), get(a, "/health")).await.expect("/health answered");
    assert_eq!(r.status, 200);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let r = post(a, "/generate", &json!({"text": "hi", "sampling_params": {"max_new_tokens": 4}})).await;
    assert_error(&r, 503, "--max-connections");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(metric(a, "dllm:connections_over_cap_total").await >= 3.0);
    // Once the idle ones go, new connections are served again.
    drop(idle);
    // (The connection asking is one of them.)
    wait_metric(a, "dllm:num_open_connections", |n| n == 1.0).await;
    let r = post(a, "/generate", &json!({"text": "hi", "sampling_params": {"max_new_tokens": 4}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_requests_are_refused_unless_origins_are_allowed() {
    let srv = serve(&[]).await;
    let a = srv.addr;
    let r = request(a, "GET", "/health", &[("Origin", "http://evil.example")], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = post(a, "/generate", &json!({"text": ""})).await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    let preflight = [("Origin", "http://evil.example"), ("Access-Control-Request-Method", "POST")];
    let r = request(a, "OPTIONS", "/generate", &preflight, None).await;
    assert_ne!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), None);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_get_cors_headers_and_preflights() {
    let srv = serve(&["--allowed-origins", "http://a.example,https://b.example:8443", "--allowed-origins", "http://c.example"]).await;
    let a = srv.addr;
    for o in ["http://a.example", "https://b.example:8443", "http://c.example"] {
        let r = request(a, "GET", "/health", &[("Origin", o)], None).await;
        assert_eq!(r.header("access-control-allow-origin"), Some(o));
        assert_eq!(r.header("vary"), Some("Origin"));
    }
    let r = request(a, "GET", "/health", &[("Origin", "http://evil.example")], None).await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = request(
        a,
        "OPTIONS",
        "/v1/chat/completions",
        &[("Origin", "http://a.example"), ("Access-Control-Request-Method", "POST"), ("Access-Control-Request-Headers", "content-type")],
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("http://a.example"));
    assert!(r.header("access-control-allow-methods").is_some_and(|m| m.contains("POST")), "{:?}", r.headers);
    assert_eq!(r.header("access-control-allow-headers"), Some("content-type"));
    let r = request(a, "OPTIONS", "/generate", &[("Origin", "http://evil.example"), ("Access-Control-Request-Method", "POST")], None).await;
    assert_error(&r, 403, "--allowed-origins");
    srv.shutdown().await;

    let srv = serve(&["--allowed-origins", "*"]).await;
    let r = request(srv.addr, "GET", "/health", &[("Origin", "http://any.example")], None).await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    srv.shutdown().await;
}

#[test]
fn traffic_flags_are_checked_at_startup() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    for (flags, needle) in [
        (&["--max-prompts-per-request", "0"][..], "--max-prompts-per-request must be at least 1"),
        (&["--max-connections", "0"][..], "--max-connections must be at least 1"),
        (&["--header-read-timeout", "0"][..], "--header-read-timeout must be a positive number of seconds"),
        (&["--idle-timeout", "inf"][..], "--idle-timeout must be a positive number of seconds"),
        (&["--allowed-origins", "http://a.example/"][..], "is not an origin"),
    ] {
        let mut args = vec!["serve", "--device", "cpu", "--port", "0"];
        args.extend_from_slice(flags);
        let e = match dllm::server::ServeArgs::parse_from(args) {
            Ok(a) => rt.block_on(dllm::server::start(a)).err().map(|e| format!("{e:#}")).unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(needle), "{flags:?}: {e}");
    }
}
