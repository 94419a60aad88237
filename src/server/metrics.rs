//! Counters, gauges and histograms, written in the Prometheus text format at `/metrics`.
//! Names follow SGLang's (`sglang:prompt_tokens_total` -> `dllm:prompt_tokens_total`), plus the
//! diffusion ones (denoising steps, tokens per step).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

pub struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, inner: Mutex::new((vec![0; bounds.len()], 0.0, 0)) }
    }
    pub fn observe(&self, v: f64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                g.0[i] += 1;
            }
        }
        g.1 += v;
        g.2 += 1;
    }
    pub fn count(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).2
    }
    fn write(&self, out: &mut String, name: &str, help: &str) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&g.0) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", g.2, g.1, g.2);
    }
}

const LATENCY: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
const STEP: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
const TOKENS_PER_STEP: &[f64] = &[0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0];

pub struct Metrics {
    pub requests: AtomicU64,
    pub requests_ok: AtomicU64,
    pub requests_failed: AtomicU64,
    pub requests_cancelled: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub http_errors: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    /// Calls of the engine's `step` (one forward over the blocks of all active requests).
    pub engine_steps: AtomicU64,
    /// Sum over steps of the requests in that step.
    pub request_steps: AtomicU64,
    pub blocks: AtomicU64,
    /// The engine's CUDA graphs (copied from the backend after each step; 0 without graphs):
    /// step shapes recorded, and steps replayed from them.
    pub graph_recordings: AtomicU64,
    pub graph_replays: AtomicU64,
    pub running: AtomicU64,
    pub queued: AtomicU64,
    /// Prompt tokens of the running and queued requests: the work this server holds, in tokens
    /// (`num_tokens` of `/get_load`, which load-aware routers read).
    pub held_prompt_tokens: AtomicU64,
    /// Connections served now, counted against `--max-connections`.
    pub open_connections: AtomicU64,
    /// Connections past the cap being answered now (the reserve: /health and /metrics only).
    pub reserve_connections: AtomicU64,
    /// Connections that arrived with the cap reached (answered from the reserve, or closed).
    pub connections_over_cap: AtomicU64,
    pub e2e_latency: Histogram,
    pub first_block_latency: Histogram,
    pub queue_time: Histogram,
    pub step_time: Histogram,
    pub tokens_per_step: Histogram,
    pub batch_size: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let z = || AtomicU64::new(0);
        Metrics {
            requests: z(),
            requests_ok: z(),
            requests_failed: z(),
            requests_cancelled: z(),
            requests_rejected: z(),
            http_errors: z(),
            prompt_tokens: z(),
            generation_tokens: z(),
            engine_steps: z(),
            request_steps: z(),
            blocks: z(),
            graph_recordings: z(),
            graph_replays: z(),
            running: z(),
            queued: z(),
            held_prompt_tokens: z(),
            open_connections: z(),
            reserve_connections: z(),
            connections_over_cap: z(),
            e2e_latency: Histogram::new(LATENCY),
            first_block_latency: Histogram::new(LATENCY),
            queue_time: Histogram::new(LATENCY),
            step_time: Histogram::new(STEP),
            tokens_per_step: Histogram::new(TOKENS_PER_STEP),
            batch_size: Histogram::new(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let c = |s: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(s, "# HELP dllm:{name} {help}\n# TYPE dllm:{name} counter\ndllm:{name} {}", v.load(Relaxed));
        };
        let g = |s: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(s, "# HELP dllm:{name} {help}\n# TYPE dllm:{name} gauge\ndllm:{name} {}", v.load(Relaxed));
        };
        c(&mut s, "num_requests_total", "Generation requests received (one per prompt).", &self.requests);
        c(&mut s, "num_requests_finished_total", "Requests that finished (stop or length).", &self.requests_ok);
        c(&mut s, "num_requests_failed_total", "Requests that failed inside the engine.", &self.requests_failed);
        c(
            &mut s,
            "num_requests_cancelled_total",
            "Requests cancelled because the client went away or a stop string matched.",
            &self.requests_cancelled,
        );
        c(&mut s, "num_requests_rejected_total", "Requests refused before running (bad input, queue full).", &self.requests_rejected);
        c(&mut s, "http_errors_total", "HTTP responses with a 4xx or 5xx status.", &self.http_errors);
        c(&mut s, "prompt_tokens_total", "Prompt tokens of admitted requests.", &self.prompt_tokens);
        c(&mut s, "generation_tokens_total", "Tokens generated (finished requests).", &self.generation_tokens);
        c(
            &mut s,
            "denoising_steps_total",
            "Engine steps (one forward over the current blocks of all running requests).",
            &self.engine_steps,
        );
        c(&mut s, "request_denoising_steps_total", "Sum over engine steps of the requests each step carried.", &self.request_steps);
        c(&mut s, "blocks_total", "Blocks finished.", &self.blocks);
        c(
            &mut s,
            "cuda_graph_recordings_total",
            "Step shapes recorded as CUDA graphs (each shape's first step runs eagerly; 0 without graphs).",
            &self.graph_recordings,
        );
        c(
            &mut s,
            "cuda_graph_replays_total",
            "Engine steps replayed from a CUDA graph; the other steps ran eagerly (a step carrying a prompt always does).",
            &self.graph_replays,
        );
        g(&mut s, "num_running_reqs", "Requests in the engine now.", &self.running);
        g(&mut s, "num_queue_reqs", "Requests waiting for a running slot.", &self.queued);
        g(&mut s, "num_held_prompt_tokens", "Prompt tokens of the running and queued requests.", &self.held_prompt_tokens);
        g(&mut s, "num_open_connections", "Connections served now (counted against --max-connections).", &self.open_connections);
        g(&mut s, "num_reserve_connections", "Connections past --max-connections being answered now.", &self.reserve_connections);
        c(
            &mut s,
            "connections_over_cap_total",
            "Connections that arrived with --max-connections reached (given 503, or closed).",
            &self.connections_over_cap,
        );
        let steps = self.request_steps.load(Relaxed);
        let tps = if steps == 0 { 0.0 } else { self.generation_tokens.load(Relaxed) as f64 / steps as f64 };
        let _ = writeln!(
            s,
            "# HELP dllm:tokens_per_step Generated tokens per request-step over the server's life.\n# TYPE dllm:tokens_per_step gauge\ndllm:tokens_per_step {tps}"
        );
        self.e2e_latency.write(&mut s, "dllm:e2e_request_latency_seconds", "Time from request to its last token.");
        self.first_block_latency.write(&mut s, "dllm:time_to_first_block_seconds", "Time from request to its first finished block.");
        self.queue_time.write(&mut s, "dllm:queue_time_seconds", "Time a request waited for a running slot.");
        self.step_time.write(&mut s, "dllm:step_duration_seconds", "Duration of one engine step.");
        self.tokens_per_step.write(&mut s, "dllm:request_tokens_per_step", "Per finished request: generated tokens / its denoising steps.");
        self.batch_size.write(&mut s, "dllm:step_batch_size", "Requests carried by one engine step.");
        s
    }
}
