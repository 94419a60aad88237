//! `dllm serve`: an SGLang-compatible HTTP server (hyper 1 on tokio).
//!
//! Handlers parse; texts are tokenized on a pool of their own (`tokenize.rs`); the engine
//! lives on one thread (`scheduler.rs`) that owns it. Connections are capped and timed out
//! (`--max-connections`, `--header-read-timeout`, `--idle-timeout`), so that idle or half-sent
//! ones cannot take the server from everyone else.
//! Routes: SGLang's native API (`/generate`, `/health`, `/health_generate`, `/get_model_info`,
//! `/get_server_info`, `/get_load`, `/flush_cache`, `/abort_request`), OpenAI's (`/v1/models`,
//! `/v1/completions`, `/v1/chat/completions`) and `/metrics`.

pub mod args;
pub mod cors;
pub mod errors;
pub mod generate;
pub mod http;
pub mod json;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod openai;
pub mod request;
pub mod responses;
pub mod scheduler;
pub mod tokenize;

pub use args::{ServeArgs, Settings};

use crate::engine::GenParams;
use crate::rng::Rng;
use crate::runtime::{self, Loaded};
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};
use cors::Cors;
use errors::{ApiError, ApiResult};
use http::{check_api_key, full, json, read_json, Resp};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::server::graceful::GracefulShutdown;
use limits::{PromptField, PromptLimits};
use log::{log, Level};
use metrics::Metrics;
use scheduler::{AbortTarget, Scheduler};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokenize::TokenizePool;

/// Shared by every handler.
pub struct AppState {
    pub settings: Settings,
    pub tokenizer: Arc<Tokenizer>,
    /// Where prompts are tokenized: never on the async workers.
    pub tokenize: TokenizePool,
    /// How many prompts a request may hold, and how long each may be.
    pub limits: PromptLimits,
    pub cors: Cors,
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
    /// Draws the seed of every request that gives none (SGLang, vLLM and OpenAI sample afresh
    /// unless asked for a seed); seeded by `--random-seed`, else by the clock.
    seeds: Mutex<Rng>,
    /// How every request decodes unless its sampling params change a knob: the flags' algorithm,
    /// or the checkpoint family's.
    pub policy: crate::decode::Policy,
}

impl AppState {
    /// A request's `model` must be the one this server serves (`--served-model-name`).
    pub fn check_model(&self, id: &str) -> ApiResult<()> {
        if id != self.model_name {
            return Err(ApiError::not_found(format!("The model `{id}` does not exist; this server serves `{}`", self.model_name)));
        }
        Ok(())
    }

    /// A request body's `model` field: unset (null), or the served model's name. OpenAI clients
    /// send it; SGLang's model gateway adds it to every `/generate` it forwards (null unless the
    /// client named a model).
    pub fn check_model_field(&self, v: &serde_json::Value) -> ApiResult<()> {
        match v {
            serde_json::Value::Null => Ok(()),
            serde_json::Value::String(m) => self.check_model(m),
            _ => Err(ApiError::bad_request(format!("model must be a string, got {}", json::kind(v)))),
        }
    }

    /// Defaults every request starts from, before its own sampling params.
    pub fn default_params(&self) -> GenParams {
        GenParams {
            block_size: self.settings.block_size,
            policy: self.policy,
            // 53 bits: a seed any JSON client reads back exactly (JavaScript numbers are doubles).
            seed: self.seeds.lock().unwrap_or_else(|e| e.into_inner()).next_u64() >> 11,
            ..GenParams::default()
        }
    }
}

/// A running server: its bound address, and a way to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: tokio::sync::watch::Sender<bool>,
    /// The accept loop; it hands back the watcher of the connections it accepted.
    accept: tokio::task::JoinHandle<GracefulShutdown>,
}

/// How long shutdown waits for open connections to write their last responses.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

impl RunningServer {
    /// Stop accepting, end every request (each gets its final event: a 503, or a stream's last
    /// event and `[DONE]`), then let the open connections write those out before returning.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let graceful = self.accept.await.ok();
        let st = self.state.clone();
        let _ = tokio::task::spawn_blocking(move || st.sched.shutdown()).await;
        if let Some(g) = graceful {
            if tokio::time::timeout(SHUTDOWN_DRAIN, g.shutdown()).await.is_err() {
                log(Level::Warn, "connections still open after the shutdown drain; closing them");
            }
        }
    }
}

/// Check the flags, load the model (blocking work off the async threads) and start serving.
pub async fn start(args: ServeArgs) -> Result<RunningServer> {
    let settings = Settings::from_args(&args)?;
    let Some(dir) = settings.model_path.clone() else {
        bail!("no --model-path: give a checkpoint directory (the dllm binary fills in its embedded default)")
    };
    let opts = args.load.options(settings.device);
    let loaded =
        tokio::task::spawn_blocking(move || -> Result<Loaded> { runtime::load_with(&dir, &opts) }).await.context("loading the model")??;
    start_with(settings, loaded).await
}

/// Serve an already loaded model.
pub async fn start_with(settings: Settings, mut loaded: Loaded) -> Result<RunningServer> {
    let cfg = loaded.engine.config().clone();
    let policy = settings.policy(cfg.family(), true)?;
    if let Some(br) = cfg.block_routing() {
        if settings.block_size != br.block {
            // Requests decode in blocks of at most this size; a block-routed model decodes only
            // in its routing block (docs/MODEL.md, block routing).
            bail!(
                "--diffusion-block-size {}: this model routes its experts per block of {} (config.json block_size); serve it with --diffusion-block-size {}",
                settings.block_size,
                br.block,
                br.block
            );
        }
    }
    if let (crate::decode::Policy::JointThresholdInDel(_), Err(e)) = (&policy, &loaded.engine.edit_ids()) {
        bail!("--dllm-algorithm {}: {e}", policy.name());
    }
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
    // OpenAI clients name the model by this; the checkpoint folder's name, as SGLang serves it,
    // not the server's filesystem path.
    let model_name = settings.served_model_name.clone().unwrap_or_else(|| default_model_name(&loaded.model_dir));
    let tokenizer = Arc::new(loaded.tokenizer);
    let tokenize = TokenizePool::for_cores(tokenizer.clone())?;
    let limits = PromptLimits::new(settings.max_prompts_per_request, context_len, tokenizer.longest_token_bytes());
    let state = Arc::new(AppState {
        tokenizer,
        tokenize,
        limits,
        cors: Cors::new(&settings.allowed_origins),
        sched,
        metrics,
        // Absolute: `/get_model_info` reports it, and SGLang's model gateway loads its tokenizer
        // from there (a relative path would be taken against the gateway's directory, or as a
        // Hugging Face model id).
        model_dir: std::path::absolute(&loaded.model_dir).unwrap_or_else(|_| loaded.model_dir.clone()),
        model_name,
        backend: backend.clone(),
        context_len,
        vocab_size: cfg.vocab_size,
        model_type: cfg.model_type.clone(),
        started: Instant::now(),
        created_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        seeds: Mutex::new(Rng::new(settings.seed.unwrap_or_else(clock_seed))),
        policy,
        settings,
    });
    log(
        Level::Info,
        &format!(
            "serving {} ({backend}, context {context_len}, block {}, {:?}, max running {}, chat template from {}) on http://{addr}",
            state.model_dir.display(),
            state.settings.block_size,
            state.policy,
            state.settings.max_running,
            state.tokenizer.chat_template.source
        ),
    );
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let accept = tokio::spawn(accept_loop(listener, state.clone(), stop_rx));
    Ok(RunningServer { addr, state, stop, accept })
}

/// Connections past `--max-connections` that are still read and answered (see `over_capacity`):
/// enough for health checkers and a metrics scraper; past them a connection is closed at once.
const RESERVE_CONNECTIONS: u64 = 64;
/// How long a reserve connection may take to send its request head: health checkers send theirs
/// at once, and the reserve must not fill up with idle connections for long.
const RESERVE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Accept connections until `stop` fires; hand back the watcher of those it served.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    st: Arc<AppState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> GracefulShutdown {
    // Watches every connection, so that shutdown can let them write their last responses.
    let graceful = GracefulShutdown::new();
    // hyper's header-read timer starts whenever a connection waits for a request head (when it
    // opens, and after each response), so it also closes connections that send nothing.
    let timer = hyper_util::rt::TokioTimer::new();
    let mut served = hyper::server::conn::http1::Builder::new();
    served.timer(timer.clone()).header_read_timeout(st.settings.header_read_timeout);
    let mut reserve = hyper::server::conn::http1::Builder::new();
    reserve.timer(timer).header_read_timeout(st.settings.header_read_timeout.min(RESERVE_HEADER_TIMEOUT)).keep_alive(false);
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = stop.changed() => break,
        };
        let (stream, _peer) = match conn {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                log(Level::Warn, &format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let m = &st.metrics;
        // Only this loop adds connections, so the count cannot grow between the test and the add.
        let over_cap = m.open_connections.load(Relaxed) >= st.settings.max_connections as u64;
        if over_cap {
            m.connections_over_cap.fetch_add(1, Relaxed);
            if m.reserve_connections.load(Relaxed) >= RESERVE_CONNECTIONS {
                continue; // dropping the stream closes it
            }
        }
        let slot = OpenConnection::take(st.clone(), over_cap);
        let st = st.clone();
        let svc = hyper::service::service_fn(move |req| {
            let st = st.clone();
            async move { Ok::<_, Infallible>(if over_cap { over_capacity(st, req).await } else { route(st, req).await }) }
        });
        let conn = graceful.watch(if over_cap { &reserve } else { &served }.serve_connection(io, svc));
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                log(Level::Debug, &format!("connection ended: {e}"));
            }
        });
    }
    graceful
}

/// A connection counted in the metrics (and against the cap) while it lives.
struct OpenConnection {
    st: Arc<AppState>,
    reserve: bool,
}

impl OpenConnection {
    fn take(st: Arc<AppState>, reserve: bool) -> Self {
        let c = OpenConnection { st, reserve };
        c.counter().fetch_add(1, Relaxed);
        c
    }
    fn counter(&self) -> &std::sync::atomic::AtomicU64 {
        if self.reserve {
            &self.st.metrics.reserve_connections
        } else {
            &self.st.metrics.open_connections
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.counter().fetch_sub(1, Relaxed);
    }
}

/// A connection past `--max-connections`: `/health` and `/metrics` are answered as usual (they
/// cost nothing, and a health checker should see a server that is full, not one that is gone);
/// every other route gets 503, and the connection closes after one answer.
async fn over_capacity(st: Arc<AppState>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().trim_end_matches('/');
    if matches!(path, "/health" | "/metrics") {
        return route(st, req).await;
    }
    st.metrics.http_errors.fetch_add(1, Relaxed);
    let e = ApiError::unavailable(format!(
        "the server is serving its limit of {} connections (--max-connections); retry later",
        st.settings.max_connections
    ));
    let mut r = e.response();
    r.headers_mut().insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from_static("1"));
    r.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
    r
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
    // Browsers send preflights without credentials: they are answered before the key check.
    if let Some(r) = st.cors.preflight(&req) {
        return r;
    }
    let origin = req.headers().get(hyper::header::ORIGIN).cloned();
    // The prompts this request submits take their turns in the queue together.
    let group = st.sched.new_group();
    let mut resp = match scheduler::REQUEST_GROUP.scope(group, dispatch(&st, req)).await {
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
    st.cors.allow(origin.as_ref(), &mut resp);
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
        "/get_load" if is_get => Ok(json(StatusCode::OK, &load(st))),
        // Benchmarks call it between runs; finished blocks' K/V are freed with their request.
        "/flush_cache" if is_post || is_get => Ok(full(StatusCode::OK, "text/plain", "Cache flushed.\n")),
        "/v1/models" if is_get => Ok(json(StatusCode::OK, &openai::models(st))),
        p if p.starts_with("/v1/models/") && is_get => Ok(json(StatusCode::OK, &openai::model(st, &p["/v1/models/".len()..])?)),
        "/generate" if is_post => generate::generate(st, read_prompts(st, req, PromptField::Generate).await?).await,
        "/abort_request" if is_post => abort_request(st, read_json(req, st.settings.max_body_bytes, st.settings.idle_timeout).await?).await,
        "/v1/completions" if is_post => openai::completions(st, read_prompts(st, req, PromptField::Completions).await?).await,
        "/v1/chat/completions" if is_post => openai::chat(st, read_prompts(st, req, PromptField::Chat).await?).await,
        "/v1/responses" if is_post => responses::create(st, read_prompts(st, req, PromptField::Responses).await?).await,
        "/health" | "/health_generate" | "/metrics" | "/get_model_info" | "/model_info" | "/get_server_info" | "/server_info"
        | "/get_load" | "/v1/models" => Err(ApiError::method_not_allowed(format!("{path} takes GET, not {method}"))),
        p if p.starts_with("/v1/models/") => Err(ApiError::method_not_allowed(format!("{path} takes GET, not {method}"))),
        "/generate" | "/abort_request" | "/v1/completions" | "/v1/chat/completions" | "/v1/responses" => {
            Err(ApiError::method_not_allowed(format!("{path} takes POST, not {method}")))
        }
        _ => Err(ApiError::not_found(format!("no endpoint {method} {path}"))),
    }
}

/// A generation route's body, its prompts counted and measured before anything is tokenized.
async fn read_prompts(st: &AppState, req: Request<Incoming>, field: PromptField) -> ApiResult<serde_json::Value> {
    let body = read_json(req, st.settings.max_body_bytes, st.settings.idle_timeout).await?;
    st.limits.check_body(field, &body)?;
    Ok(body)
}

/// SGLang's `POST /abort_request`: `{"rid": ...}` ends that request, `{"abort_all": true}` every
/// queued and running one. Each ends with `finish_reason {"type": "abort"}` and what it had
/// generated; its KV cache is freed. An unknown rid is no error (the request may have finished).
async fn abort_request(st: &Arc<AppState>, body: serde_json::Value) -> ApiResult<Resp> {
    let o = body.as_object().ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    for k in o.keys() {
        if k != "rid" && k != "abort_all" && k != "abort_message" {
            return Err(ApiError::bad_request(format!("unknown field {k:?} (abort_request takes rid or abort_all)")));
        }
    }
    let all = match o.get("abort_all") {
        None | Some(serde_json::Value::Null) => false,
        Some(v) => v.as_bool().ok_or_else(|| ApiError::bad_request("abort_all must be true or false"))?,
    };
    let target = match o.get("rid") {
        _ if all => AbortTarget::All,
        Some(serde_json::Value::String(r)) if !r.is_empty() => AbortTarget::Rid(r.clone()),
        None | Some(serde_json::Value::Null) => return Err(ApiError::bad_request("give rid (a request id) or abort_all: true")),
        Some(_) => return Err(ApiError::bad_request("rid must be a non-empty string")),
    };
    let n = st.sched.abort(target).await;
    Ok(json(StatusCode::OK, &serde_json::json!({"aborted": n})))
}

/// A seed from the clock and the process id, for servers started without `--random-seed`.
fn clock_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

/// The last component of the checkpoint folder (`/models/LLaDA2.0-mini` -> `LLaDA2.0-mini`).
fn default_model_name(dir: &std::path::Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string())
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
        "dllm_algorithm": st.policy.name(),
        "diffusion_block_size": st.settings.block_size,
    })
}

/// SGLang's `GET /get_load`, which the model gateway polls for its load-aware policies: one entry
/// per data-parallel rank (dllm has one), with the requests it holds (running and queued), those
/// waiting, and their prompt tokens.
fn load(st: &AppState) -> serde_json::Value {
    let m = &st.metrics;
    let (running, queued) = (m.running.load(Relaxed), m.queued.load(Relaxed));
    serde_json::json!([{
        "dp_rank": 0,
        "num_reqs": running + queued,
        "num_waiting_reqs": queued,
        "num_tokens": m.held_prompt_tokens.load(Relaxed),
    }])
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
        o.insert("dllm_algorithm".into(), st.policy.name().into());
        match st.policy {
            crate::decode::Policy::LowConfidence { threshold } => {
                o.insert("threshold".into(), threshold.into());
            }
            crate::decode::Policy::JointThreshold(jt) => {
                o.insert("threshold".into(), jt.threshold.into());
                o.insert("edit_threshold".into(), jt.edit_threshold.into());
                o.insert("max_post_edit_steps".into(), jt.max_post_edit_steps.into());
            }
            crate::decode::Policy::JointThresholdInDel(a) => {
                o.insert("threshold".into(), a.threshold.into());
                o.insert("edit_threshold".into(), a.edit_threshold.into());
                o.insert("max_post_edit_steps".into(), a.max_post_edit_steps.into());
            }
            crate::decode::Policy::FixedCount { .. } => {}
        }
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
