//! `dllm serve`: an SGLang-compatible HTTP server (hyper 1 on tokio).
//!
//! Handlers parse and tokenize; the engine lives on one thread (`scheduler.rs`) that owns it.
//! Routes: SGLang's native API (`/generate`, `/health`, `/health_generate`, `/get_model_info`,
//! `/get_server_info`), OpenAI's (`/v1/models`, `/v1/completions`, `/v1/chat/completions`)
//! and `/metrics`.

pub mod errors;
pub mod generate;
pub mod http;
pub mod json;
pub mod log;
pub mod metrics;
pub mod openai;
pub mod scheduler;

use crate::engine::GenParams;
use crate::runtime::{self, Device, Loaded};
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};
use errors::{ApiError, ApiResult};
use http::{check_api_key, full, json, read_json, Resp};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use log::{log, set_log_level, Level};
use metrics::Metrics;
use scheduler::Scheduler;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// Flags of `dllm serve`: SGLang's `launch_server` names, so its command lines work here.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Model directory (Hugging Face layout). Default: the embedded tiny model.
    #[arg(long)]
    pub model_path: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (the bound address is logged).
    #[arg(long, default_value_t = 30000)]
    pub port: u16,
    /// Unmasking algorithm (SGLang's dLLM PR spelling); only "LowConfidence".
    #[arg(long)]
    pub diffusion_algorithm: Option<String>,
    /// Newer SGLang spelling of --diffusion-algorithm.
    #[arg(long)]
    pub dllm_algorithm: Option<String>,
    /// YAML file with the algorithm's settings, e.g. `threshold: 0.9`.
    #[arg(long)]
    pub dllm_algorithm_config: Option<PathBuf>,
    /// Block size of diffusion decoding: the default, and the largest a request may ask for.
    #[arg(long, default_value_t = 32)]
    pub diffusion_block_size: usize,
    /// Requests running in the engine at once (their blocks share each step); others queue.
    #[arg(long, default_value_t = 32)]
    pub max_running_requests: usize,
    /// Requests that may wait for a running slot; beyond that the server answers 503.
    #[arg(long, default_value_t = 1024)]
    pub max_queued_requests: usize,
    /// Accepted for SGLang compatibility; must be in (0, 1].
    #[arg(long)]
    pub mem_fraction_static: Option<f32>,
    /// Tensor parallelism: dllm runs a model on one GPU, so only 1.
    #[arg(long, alias = "tensor-parallel-size", default_value_t = 1)]
    pub tp_size: usize,
    /// Data parallelism: only 1.
    #[arg(long, alias = "data-parallel-size", default_value_t = 1)]
    pub dp_size: usize,
    /// Accepted for SGLang compatibility (dllm has its own attention kernels).
    #[arg(long)]
    pub attention_backend: Option<String>,
    #[arg(long)]
    pub trust_remote_code: bool,
    #[arg(long)]
    pub disable_cuda_graph: bool,
    #[arg(long)]
    pub disable_radix_cache: bool,
    /// Accepted for SGLang compatibility (metrics are always on at /metrics).
    #[arg(long)]
    pub enable_metrics: bool,
    #[arg(long)]
    pub skip_server_warmup: bool,
    #[arg(long)]
    pub dtype: Option<String>,
    #[arg(long)]
    pub random_seed: Option<u64>,
    /// Most tokens one forward carries; longer prefills run in chunks of whole blocks.
    /// -1 (any value <= 0) disables chunking. Default: 8192.
    #[arg(long, allow_negative_numbers = true)]
    pub chunked_prefill_size: Option<i64>,
    #[arg(long)]
    pub cuda_graph_max_bs: Option<usize>,
    /// Longest sequence (prompt + generated) a request may reach; at most the model's.
    #[arg(long)]
    pub context_length: Option<usize>,
    /// The model name in the OpenAI API (default: the model path).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Require `Authorization: Bearer KEY` on every route but /health and /metrics.
    #[arg(long)]
    pub api_key: Option<String>,
    /// error, warning, info or debug.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// Confidence threshold of LowConfidence (overrides the algorithm config's).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Largest request body accepted (bytes); larger gets 413.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
}

impl ServeArgs {
    /// Parse `dllm serve ...`-style arguments (the first is the program name).
    pub fn parse_from<I: IntoIterator<Item = S>, S: Into<std::ffi::OsString> + Clone>(args: I) -> Result<Self> {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: ServeArgs,
        }
        use clap::Parser;
        Ok(P::try_parse_from(args)?.a)
    }
}

/// What the server runs with, checked before the model is loaded.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub model_path: Option<PathBuf>,
    pub served_model_name: Option<String>,
    pub device: Device,
    pub algorithm: String,
    pub threshold: f32,
    pub block_size: usize,
    pub max_running: usize,
    pub max_queue: usize,
    pub context_length: Option<usize>,
    /// The engine's forward budget (`--chunked-prefill-size`; usize::MAX: no chunking).
    pub max_forward_tokens: usize,
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    pub seed: u64,
    /// Every flag as given, for /get_server_info.
    pub args_json: serde_json::Value,
}

/// GPUs one server can use: tensor parallelism is not implemented.
pub const MAX_TP: usize = 1;

impl Settings {
    pub fn from_args(a: &ServeArgs) -> Result<Settings> {
        set_log_level(&a.log_level)?;
        let algo = match (&a.diffusion_algorithm, &a.dllm_algorithm) {
            (Some(x), Some(y)) if !x.eq_ignore_ascii_case(y) => {
                bail!("--diffusion-algorithm {x:?} and --dllm-algorithm {y:?} disagree; give one")
            }
            (Some(x), _) | (None, Some(x)) => x.clone(),
            (None, None) => "LowConfidence".to_string(),
        };
        if !algo.eq_ignore_ascii_case("LowConfidence") {
            bail!("unknown diffusion algorithm {algo:?}: dllm supports \"LowConfidence\"");
        }
        let mut threshold = default_threshold();
        if let Some(path) = &a.dllm_algorithm_config {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading --dllm-algorithm-config {}", path.display()))?;
            let v: serde_yaml::Value =
                serde_yaml::from_str(&text).with_context(|| format!("--dllm-algorithm-config {} is not valid YAML", path.display()))?;
            match v {
                serde_yaml::Value::Null => {}
                serde_yaml::Value::Mapping(m) => {
                    for (k, val) in m {
                        let key = k.as_str().unwrap_or("").to_string();
                        match key.as_str() {
                            "threshold" => {
                                threshold =
                                    val.as_f64().with_context(|| format!("{}: threshold must be a number, got {val:?}", path.display()))?
                                        as f32
                            }
                            _ => log(Level::Warn, &format!("{}: ignoring unknown key {k:?}", path.display())),
                        }
                    }
                }
                other => bail!("--dllm-algorithm-config {} must be a mapping (e.g. `threshold: 0.9`), got {other:?}", path.display()),
            }
        }
        if let Some(t) = a.threshold {
            threshold = t;
        }
        if !(0.0..=1.0).contains(&threshold) {
            bail!("threshold must be in [0, 1], got {threshold}");
        }
        if a.diffusion_block_size == 0 || a.diffusion_block_size > 4096 {
            bail!("--diffusion-block-size must be between 1 and 4096, got {}", a.diffusion_block_size);
        }
        if a.tp_size == 0 {
            bail!("--tp-size must be at least 1");
        }
        if a.tp_size > MAX_TP {
            // The guide's `--tp-size 4` works where 4 GPUs exist: the model runs on the first.
            let gpus = crate::runtime::gpu_count();
            if a.tp_size > gpus {
                bail!(
                    "--tp-size {}: only {gpus} GPU(s) present, and dllm runs a model on one GPU (tensor parallelism is not implemented); use --tp-size 1",
                    a.tp_size
                );
            }
            log(
                Level::Warn,
                &format!("--tp-size {}: tensor parallelism is not implemented; the model runs on GPU 0 and must fit its memory", a.tp_size),
            );
        }
        if a.dp_size != 1 {
            bail!("--dp-size {}: data parallelism is not implemented; run one server per GPU", a.dp_size);
        }
        if a.max_running_requests == 0 {
            bail!("--max-running-requests must be at least 1");
        }
        if let Some(m) = a.mem_fraction_static {
            if !(m > 0.0 && m <= 1.0) {
                bail!("--mem-fraction-static must be in (0, 1], got {m}");
            }
        }
        if a.context_length == Some(0) {
            bail!("--context-length must be at least 1");
        }
        if a.max_body_bytes == 0 {
            bail!("--max-body-bytes must be at least 1");
        }
        if let Some(k) = &a.api_key {
            if k.is_empty() {
                bail!("--api-key is empty");
            }
        }
        let noted = |flag: &str, why: &str| log(Level::Info, &format!("{flag}: accepted; {why}"));
        if let Some(b) = &a.attention_backend {
            noted(&format!("--attention-backend {b}"), "dllm uses its own block-causal attention kernels");
        }
        if a.trust_remote_code {
            noted("--trust-remote-code", "dllm runs no model code from the checkpoint");
        }
        if a.disable_cuda_graph {
            noted("--disable-cuda-graph", "no effect here");
        }
        if a.disable_radix_cache {
            noted("--disable-radix-cache", "dllm has no prefix cache to disable");
        }
        if let Some(m) = a.mem_fraction_static {
            noted(&format!("--mem-fraction-static {m}"), "the CUDA KV cache takes this fraction of the memory left after the weights");
        }
        if a.enable_metrics {
            noted("--enable-metrics", "metrics are always served at /metrics");
        }
        for (f, set) in [
            ("--skip-server-warmup", a.skip_server_warmup),
            ("--dtype", a.dtype.is_some()),
            ("--cuda-graph-max-bs", a.cuda_graph_max_bs.is_some()),
        ] {
            if set {
                noted(f, "no effect here");
            }
        }
        let chunked_prefill_size = a.chunked_prefill_size.unwrap_or(crate::engine::DEFAULT_CHUNKED_PREFILL as i64);
        let args_json = serde_json::json!({
            "model_path": a.model_path,
            "host": a.host,
            "port": a.port,
            "dllm_algorithm": "LowConfidence",
            "dllm_algorithm_config": a.dllm_algorithm_config,
            "diffusion_block_size": a.diffusion_block_size,
            "threshold": threshold,
            "max_running_requests": a.max_running_requests,
            "max_queued_requests": a.max_queued_requests,
            "mem_fraction_static": a.mem_fraction_static,
            "tp_size": a.tp_size,
            "dp_size": a.dp_size,
            "attention_backend": a.attention_backend,
            "trust_remote_code": a.trust_remote_code,
            "disable_cuda_graph": a.disable_cuda_graph,
            "disable_radix_cache": a.disable_radix_cache,
            "context_length": a.context_length,
            "chunked_prefill_size": chunked_prefill_size,
            "served_model_name": a.served_model_name,
            "api_key": a.api_key.as_ref().map(|_| "<set>"),
            "log_level": a.log_level,
            "device": format!("{:?}", a.device).to_lowercase(),
            "max_body_bytes": a.max_body_bytes,
            "random_seed": a.random_seed,
        });
        Ok(Settings {
            host: a.host.clone(),
            port: a.port,
            model_path: a.model_path.clone(),
            served_model_name: a.served_model_name.clone(),
            device: a.device,
            algorithm: "LowConfidence".into(),
            threshold,
            block_size: a.diffusion_block_size,
            max_running: a.max_running_requests,
            max_queue: a.max_queued_requests,
            context_length: a.context_length,
            max_forward_tokens: crate::engine::forward_budget(chunked_prefill_size),
            api_key: a.api_key.clone(),
            max_body_bytes: a.max_body_bytes,
            seed: a.random_seed.unwrap_or(0),
            args_json,
        })
    }
}

/// The engine's default LowConfidence threshold.
fn default_threshold() -> f32 {
    match GenParams::default().policy {
        crate::engine::Policy::LowConfidence { threshold } => threshold,
        _ => 0.95,
    }
}

/// Shared by every handler.
pub struct AppState {
    pub settings: Settings,
    pub tokenizer: Arc<Tokenizer>,
    pub sched: Scheduler,
    pub metrics: Arc<Metrics>,
    pub model_dir: PathBuf,
    pub model_name: String,
    pub backend: String,
    pub context_len: usize,
    pub vocab_size: usize,
    pub model_type: String,
    pub started: Instant,
    pub created_unix: u64,
}

impl AppState {
    /// Defaults every request starts from, before its own sampling params.
    pub fn default_params(&self) -> GenParams {
        GenParams {
            block_size: self.settings.block_size,
            policy: crate::engine::Policy::LowConfidence { threshold: self.settings.threshold },
            seed: self.settings.seed,
            ..GenParams::default()
        }
    }
}

/// A running server: its bound address, and a way to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: tokio::sync::watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stop accepting, stop the engine thread, and wait for both.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.accept.await;
        let st = self.state.clone();
        let _ = tokio::task::spawn_blocking(move || st.sched.shutdown()).await;
    }
}

/// Check the flags, load the model (blocking work off the async threads) and start serving.
pub async fn start(args: ServeArgs) -> Result<RunningServer> {
    let settings = Settings::from_args(&args)?;
    if let Some(m) = args.mem_fraction_static {
        // The CUDA backend reads its KV-cache fraction from here; an explicit variable wins.
        if std::env::var_os("DLLM_MEM_FRACTION_STATIC").is_none() {
            std::env::set_var("DLLM_MEM_FRACTION_STATIC", m.to_string());
        }
    }
    let path = settings.model_path.clone();
    let device = settings.device;
    let loaded = tokio::task::spawn_blocking(move || -> Result<Loaded> {
        let dir = runtime::resolve_model(path.as_deref())?;
        runtime::load(&dir, device)
    })
    .await
    .context("loading the model")??;
    start_with(settings, loaded).await
}

/// Serve an already loaded model.
pub async fn start_with(settings: Settings, mut loaded: Loaded) -> Result<RunningServer> {
    let cfg = loaded.engine.config().clone();
    if let Some(n) = settings.context_length {
        if n > cfg.max_position_embeddings {
            bail!("--context-length {n} exceeds the model's max_position_embeddings ({})", cfg.max_position_embeddings);
        }
        loaded.engine.set_context_len(n);
    }
    let context_len = loaded.engine.context_len();
    loaded.engine.set_max_forward_tokens(settings.max_forward_tokens);
    let backend = loaded.engine.backend_name();
    let addr: SocketAddr = tokio::net::lookup_host((settings.host.as_str(), settings.port))
        .await
        .with_context(|| format!("resolving --host {}", settings.host))?
        .next()
        .with_context(|| format!("--host {} resolves to no address", settings.host))?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::default());
    let sched = Scheduler::start(loaded.engine, settings.max_running, settings.max_queue, metrics.clone());
    let model_name = settings.served_model_name.clone().unwrap_or_else(|| loaded.model_dir.display().to_string());
    let state = Arc::new(AppState {
        tokenizer: Arc::new(loaded.tokenizer),
        sched,
        metrics,
        model_dir: loaded.model_dir.clone(),
        model_name,
        backend: backend.clone(),
        context_len,
        vocab_size: cfg.vocab_size,
        model_type: cfg.model_type.clone(),
        started: Instant::now(),
        created_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        settings,
    });
    log(
        Level::Info,
        &format!(
            "serving {} ({backend}, context {context_len}, block {}, threshold {}, max running {}) on http://{addr}",
            state.model_dir.display(),
            state.settings.block_size,
            state.settings.threshold,
            state.settings.max_running
        ),
    );
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let st = state.clone();
    let accept = tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = stop_rx.changed() => break,
            };
            let (stream, _peer) = match conn {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    log(Level::Warn, &format!("accept failed: {e}"));
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(route(st, req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await {
                    log(Level::Debug, &format!("connection ended: {e}"));
                }
            });
        }
    });
    Ok(RunningServer { addr, state, stop, accept })
}

/// `dllm serve`: run until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let server = start(args).await?;
        wait_for_signal().await?;
        log(Level::Info, "shutting down");
        server.shutdown().await;
        Ok(())
    })
}

/// Ctrl-C, or SIGTERM (what `docker stop` and systemd send).
async fn wait_for_signal() -> Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
    }
}

async fn route(st: Arc<AppState>, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let t0 = Instant::now();
    // CORS, as SGLang allows it: any origin; preflights are answered here, before the key check.
    if method == Method::OPTIONS {
        let mut r = full(StatusCode::NO_CONTENT, "text/plain", "");
        let h = r.headers_mut();
        h.insert("access-control-allow-origin", hyper::header::HeaderValue::from_static("*"));
        h.insert("access-control-allow-methods", hyper::header::HeaderValue::from_static("GET, POST, OPTIONS"));
        h.insert("access-control-allow-headers", hyper::header::HeaderValue::from_static("*"));
        h.insert("access-control-max-age", hyper::header::HeaderValue::from_static("86400"));
        return r;
    }
    let mut resp = match dispatch(&st, req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_server_error() {
                log(Level::Error, &format!("{method} {path}: {e}"));
            } else {
                log(Level::Debug, &format!("{method} {path}: {e}"));
            }
            e.response()
        }
    };
    resp.headers_mut().insert("access-control-allow-origin", hyper::header::HeaderValue::from_static("*"));
    if resp.status().is_client_error() || resp.status().is_server_error() {
        st.metrics.http_errors.fetch_add(1, Relaxed);
    }
    log(Level::Debug, &format!("{method} {path} -> {} ({:.1} ms)", resp.status().as_u16(), t0.elapsed().as_secs_f64() * 1e3));
    resp
}

async fn dispatch(st: &Arc<AppState>, req: Request<Incoming>) -> ApiResult<Resp> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let path = if path.is_empty() { "/".to_string() } else { path };
    let method = req.method().clone();
    let open = matches!(path.as_str(), "/health" | "/metrics");
    if !open {
        check_api_key(st.settings.api_key.as_deref(), &req)?;
    }
    let is_get = method == Method::GET || method == Method::HEAD;
    let is_post = method == Method::POST;
    match path.as_str() {
        "/health" if is_get => Ok(full(StatusCode::OK, "text/plain", "")),
        "/health_generate" if is_get => generate::health_generate(st).await,
        "/metrics" if is_get => Ok(full(StatusCode::OK, "text/plain; version=0.0.4", st.metrics.render())),
        "/get_model_info" | "/model_info" if is_get => Ok(json(StatusCode::OK, &model_info(st))),
        "/get_server_info" | "/server_info" if is_get => Ok(json(StatusCode::OK, &server_info(st))),
        // Benchmarks call it between runs; finished blocks' K/V are freed with their request.
        "/flush_cache" if is_post || is_get => Ok(full(StatusCode::OK, "text/plain", "Cache flushed.\n")),
        "/v1/models" if is_get => Ok(json(StatusCode::OK, &openai::models(st))),
        "/generate" if is_post => generate::generate(st, read_json(req, st.settings.max_body_bytes).await?).await,
        "/v1/completions" if is_post => openai::completions(st, read_json(req, st.settings.max_body_bytes).await?).await,
        "/v1/chat/completions" if is_post => openai::chat(st, read_json(req, st.settings.max_body_bytes).await?).await,
        "/health" | "/health_generate" | "/metrics" | "/get_model_info" | "/model_info" | "/get_server_info" | "/server_info"
        | "/v1/models" => Err(ApiError::method_not_allowed(format!("{path} takes GET, not {method}"))),
        "/generate" | "/v1/completions" | "/v1/chat/completions" => {
            Err(ApiError::method_not_allowed(format!("{path} takes POST, not {method}")))
        }
        _ => Err(ApiError::not_found(format!("no endpoint {method} {path}"))),
    }
}

fn model_info(st: &AppState) -> serde_json::Value {
    serde_json::json!({
        "model_path": st.model_dir,
        "tokenizer_path": st.model_dir,
        "served_model_name": st.model_name,
        "is_generation": true,
        "model_type": st.model_type,
        "preferred_sampling_params": null,
        "weight_version": "default",
        "has_image_understanding": false,
        "has_audio_understanding": false,
        "context_length": st.context_len,
        "vocab_size": st.vocab_size,
        "dllm_algorithm": st.settings.algorithm,
        "diffusion_block_size": st.settings.block_size,
    })
}

fn server_info(st: &AppState) -> serde_json::Value {
    let m = &st.metrics;
    let mut v = st.settings.args_json.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        o.insert("backend".into(), st.backend.clone().into());
        o.insert("served_model_name".into(), st.model_name.clone().into());
        o.insert("context_length".into(), st.context_len.into());
        o.insert("uptime_s".into(), st.started.elapsed().as_secs_f64().into());
        o.insert(
            "internal_states".into(),
            serde_json::json!([{
                "num_running_reqs": m.running.load(Relaxed),
                "num_queue_reqs": m.queued.load(Relaxed),
                "denoising_steps": m.engine_steps.load(Relaxed),
                "generation_tokens": m.generation_tokens.load(Relaxed),
            }]),
        );
    }
    v
}
