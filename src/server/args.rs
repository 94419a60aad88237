//! The flags of `dllm serve` and the checked `Settings` made from them, before any model loads.

use super::log::{log, set_log_level, Level};
use crate::config::Family;
use crate::decode::{Knobs, Policy, Setting};
use crate::engine::MAX_BLOCK_SIZE;
use crate::runtime::Device;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;
use yaml_rust2::{Yaml, YamlLoader};

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
    /// Decoding algorithm (SGLang's dLLM PR spelling): LowConfidence, JointThreshold or
    /// JointThresholdInDel. Default: the checkpoint family's (LLaDA2.0: LowConfidence, LLaDA2.1:
    /// JointThreshold, LLaDA2.2: JointThresholdInDel).
    #[arg(long)]
    pub diffusion_algorithm: Option<String>,
    /// Newer SGLang spelling of --diffusion-algorithm.
    #[arg(long)]
    pub dllm_algorithm: Option<String>,
    /// YAML file with the algorithm's settings (SGLang's keys), e.g. `threshold: 0.9`, or for
    /// JointThreshold and JointThresholdInDel `threshold`, `edit_threshold`, `max_post_edit_steps`.
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
    #[command(flatten)]
    pub load: crate::runtime::LoadFlags,
    /// Data parallelism: only 1.
    #[arg(long, alias = "data-parallel-size", default_value_t = 1)]
    pub dp_size: usize,
    /// Accepted for SGLang compatibility (dllm has its own attention kernels).
    #[arg(long)]
    pub attention_backend: Option<String>,
    #[arg(long)]
    pub trust_remote_code: bool,
    #[arg(long)]
    pub disable_radix_cache: bool,
    /// Accepted for SGLang compatibility (metrics are always on at /metrics).
    #[arg(long)]
    pub enable_metrics: bool,
    #[arg(long)]
    pub skip_server_warmup: bool,
    #[arg(long)]
    pub dtype: Option<String>,
    /// Seeds the draw of each unseeded request's sampling seed, so a server's run can be
    /// replayed; without it every unseeded request gets a fresh random seed.
    #[arg(long)]
    pub random_seed: Option<u64>,
    /// Most tokens one forward carries; longer prefills run in chunks of whole blocks.
    /// -1 (any value <= 0) disables chunking. Default: 8192.
    #[arg(long, allow_negative_numbers = true)]
    pub chunked_prefill_size: Option<i64>,
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
    /// Unmask threshold of the algorithm (overrides the algorithm config's).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Largest request body accepted (bytes); larger gets 413.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Most prompts one request may hold (a list of texts or of token lists); more gets 400.
    /// Each prompt is scheduled as its own request, taking turns with other clients' requests.
    /// 256 is a quarter of the default queue: one client's batch cannot fill it by itself.
    #[arg(long, default_value_t = 256)]
    pub max_prompts_per_request: usize,
    /// Seconds a connection has to send a complete request head, counted from when it opens
    /// or from its previous response: a connection that sends nothing (an idle keep-alive one
    /// too) or only part of a head is closed after this.
    #[arg(long, default_value_t = 10.0)]
    pub header_read_timeout: f64,
    /// Seconds a client may send nothing while the server reads its request body; past this
    /// the request gets 408 and its connection is closed.
    #[arg(long, default_value_t = 30.0)]
    pub idle_timeout: f64,
    /// Connections served at once. Past it, a small reserve of connections answers /health and
    /// /metrics and gives every other route 503 with `Connection: close`; beyond the reserve a
    /// new connection is closed at once.
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
    /// Origins whose browser pages may call the server (CORS), comma-separated or repeated;
    /// `*` allows any. Default: none (no `Access-Control-Allow-Origin` header is sent).
    #[arg(long, value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
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
    /// `--dllm-algorithm` (either spelling) as given; None: the checkpoint family's.
    pub algorithm: Option<String>,
    /// `--dllm-algorithm-config`: the file and its settings (the algorithm's own keys).
    pub algorithm_config: Option<(PathBuf, Vec<(String, Setting)>)>,
    /// `--threshold`.
    pub threshold: Option<f32>,
    pub block_size: usize,
    pub max_running: usize,
    pub max_queue: usize,
    pub context_length: Option<usize>,
    /// The engine's forward budget (`--chunked-prefill-size`; usize::MAX: no chunking).
    pub max_forward_tokens: usize,
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    /// `--random-seed`: where the per-request seeds are drawn from (None: from the clock).
    pub seed: Option<u64>,
    pub max_prompts_per_request: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// `--allowed-origins`, trimmed; empty: no CORS headers at all.
    pub allowed_origins: Vec<String>,
    /// Every flag as given, for /get_server_info.
    pub args_json: serde_json::Value,
}

impl Settings {
    /// Check every flag (same order as `--help` reads, first failure wins), log what is
    /// accepted without effect, and settle the values the server runs with.
    pub fn from_args(a: &ServeArgs) -> Result<Settings> {
        set_log_level(&a.log_level)?;
        let algorithm = check_algorithm(a)?;
        let algorithm_config = match &a.dllm_algorithm_config {
            Some(path) => Some((path.clone(), read_algorithm_config(path)?)),
            None => None,
        };
        check_block_size(a)?;
        check_parallelism(a)?;
        check_limits(a)?;
        check_dtype(a.dtype.as_deref())?;
        note_accepted_flags(a);
        let chunked_prefill_size = a.chunked_prefill_size.unwrap_or(crate::engine::DEFAULT_CHUNKED_PREFILL as i64);
        let settings = Settings {
            host: a.host.clone(),
            port: a.port,
            model_path: a.model_path.clone(),
            served_model_name: a.served_model_name.clone(),
            device: a.device,
            algorithm,
            algorithm_config,
            threshold: a.threshold,
            block_size: a.diffusion_block_size,
            max_running: a.max_running_requests,
            max_queue: a.max_queued_requests,
            context_length: a.context_length,
            max_forward_tokens: crate::engine::forward_budget(chunked_prefill_size),
            api_key: a.api_key.clone(),
            max_body_bytes: a.max_body_bytes,
            seed: a.random_seed,
            max_prompts_per_request: a.max_prompts_per_request,
            header_read_timeout: seconds(a.header_read_timeout, "--header-read-timeout")?,
            idle_timeout: seconds(a.idle_timeout, "--idle-timeout")?,
            max_connections: a.max_connections,
            allowed_origins: check_origins(&a.allowed_origins)?,
            args_json: args_json(a, chunked_prefill_size),
        };
        // The algorithm's settings are checked now: against the named algorithm, or when the
        // checkpoint's family will choose it, against each algorithm a family may choose.
        for family in [Family::Llada20, Family::Llada21, Family::Llada22] {
            settings.policy(family, false)?;
        }
        Ok(settings)
    }

    /// The decoding policy the server runs: `--dllm-algorithm`, else `family`'s algorithm, with
    /// its `--dllm-algorithm-config` settings, then `--threshold`. `warn`: log the config's keys
    /// the algorithm does not know.
    pub fn policy(&self, family: Family, warn: bool) -> Result<Policy> {
        let algo = self.algorithm.as_deref().unwrap_or(family.default_algorithm());
        let policy = match &self.algorithm_config {
            None => Policy::from_algorithm(algo, &[]).map_err(anyhow::Error::msg)?.0,
            Some((path, settings)) => {
                let (policy, unknown) = Policy::from_algorithm(algo, settings).map_err(|e| anyhow!("{}: {e}", path.display()))?;
                for key in unknown.iter().filter(|_| warn) {
                    log(Level::Warn, &format!("{}: ignoring unknown key {key:?} of {algo}", path.display()));
                }
                policy
            }
        };
        let knobs = Knobs { threshold: self.threshold, ..Knobs::default() };
        policy.with_knobs(&knobs).map_err(|e| anyhow!("--threshold: {e}"))
    }
}

/// `--diffusion-algorithm` and `--dllm-algorithm` (either spelling, agreeing if both): one of
/// [`crate::decode::ALGORITHMS`] (case-insensitive); None when neither is given (the
/// checkpoint family's algorithm).
fn check_algorithm(a: &ServeArgs) -> Result<Option<String>> {
    let algo = match (&a.diffusion_algorithm, &a.dllm_algorithm) {
        (Some(x), Some(y)) if !x.eq_ignore_ascii_case(y) => {
            bail!("--diffusion-algorithm {x:?} and --dllm-algorithm {y:?} disagree; give one")
        }
        (Some(x), _) | (None, Some(x)) => x.clone(),
        (None, None) => return Ok(None),
    };
    Policy::from_algorithm(&algo, &[]).map_err(anyhow::Error::msg)?;
    Ok(Some(algo))
}

/// A `--dllm-algorithm-config` YAML file as (key, value) pairs: an empty file has none; anything
/// but a mapping of scalars is an error.
fn read_algorithm_config(path: &Path) -> Result<Vec<(String, Setting)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading --dllm-algorithm-config {}", path.display()))?;
    let docs =
        YamlLoader::load_from_str(&text).map_err(|e| anyhow!("--dllm-algorithm-config {} is not valid YAML: {e}", path.display()))?;
    match docs.into_iter().next() {
        None | Some(Yaml::Null) => Ok(vec![]),
        Some(Yaml::Hash(m)) => Ok(m
            .into_iter()
            .map(|(k, v)| {
                let key = k.as_str().map(str::to_string).unwrap_or_else(|| format!("{k:?}"));
                let value = match v.as_f64().or_else(|| v.as_i64().map(|i| i as f64)) {
                    Some(x) => Setting::Number(x),
                    None => Setting::Other(format!("{v:?}")),
                };
                (key, value)
            })
            .collect()),
        Some(other) => bail!("--dllm-algorithm-config {} must be a mapping (e.g. `threshold: 0.9`), got {other:?}", path.display()),
    }
}

fn check_block_size(a: &ServeArgs) -> Result<()> {
    if a.diffusion_block_size == 0 || a.diffusion_block_size > MAX_BLOCK_SIZE {
        bail!("--diffusion-block-size must be between 1 and {MAX_BLOCK_SIZE}, got {}", a.diffusion_block_size);
    }
    Ok(())
}

/// `--tp-size`: at most the GPUs present (the model's widths are checked at load);
/// `--dp-size`: 1.
fn check_parallelism(a: &ServeArgs) -> Result<()> {
    if a.load.tp_size == 0 {
        bail!("--tp-size must be at least 1");
    }
    let gpus = crate::runtime::gpu_count();
    if a.load.tp_size > 1 && a.device != Device::Cpu && a.load.tp_size > gpus {
        bail!(
            "--tp-size {} needs {} GPUs, but this machine shows {gpus} (with --device cpu the ranks run as CPU threads)",
            a.load.tp_size,
            a.load.tp_size
        );
    }
    if a.dp_size != 1 {
        bail!("--dp-size {}: data parallelism is not implemented; run one server per GPU", a.dp_size);
    }
    Ok(())
}

/// Sizes and limits that must be positive or in range, and a non-empty `--api-key`.
fn check_limits(a: &ServeArgs) -> Result<()> {
    if a.max_running_requests == 0 {
        bail!("--max-running-requests must be at least 1");
    }
    if let Some(m) = a.load.mem_fraction_static {
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
    if a.max_prompts_per_request == 0 {
        bail!("--max-prompts-per-request must be at least 1");
    }
    if a.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    Ok(())
}

/// A timeout flag in seconds: positive and finite (fractions allowed).
fn seconds(s: f64, flag: &str) -> Result<Duration> {
    if !(s > 0.0 && s.is_finite() && s <= 1e9) {
        bail!("{flag} must be a positive number of seconds, got {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

/// `--allowed-origins`: `*`, or origins as browsers send them (`scheme://host[:port]`, no path).
fn check_origins(given: &[String]) -> Result<Vec<String>> {
    let mut out = vec![];
    for o in given.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        let ok = o == "*" || (o.contains("://") && !o.ends_with('/') && hyper::header::HeaderValue::from_str(o).is_ok());
        if !ok {
            bail!("--allowed-origins {o:?} is not an origin: give `*` or `scheme://host[:port]` (no path, no trailing slash)");
        }
        out.push(o.to_string());
    }
    Ok(out)
}

/// `--dtype`, one of SGLang's values. SGLang casts the weights to it; dllm runs them as the
/// checkpoint stores them (bf16, or fp8 experts under `--quantization fp8`), so `auto` and
/// `bfloat16` are what it does, and a float16 or float32 run, which would compute something
/// else, is refused rather than ignored.
fn check_dtype(dtype: Option<&str>) -> Result<()> {
    match dtype {
        None | Some("auto" | "bfloat16") => Ok(()),
        Some(d @ ("half" | "float16" | "float" | "float32")) => {
            bail!("--dtype {d}: dllm does not cast the weights; it runs them as the checkpoint stores them (bf16). Give auto or bfloat16, or leave it out")
        }
        Some(d) => bail!("--dtype {d:?} is not a dtype: SGLang's are auto, half, float16, bfloat16, float and float32"),
    }
}

/// Flags taken for SGLang compatibility: say what each does here (often nothing).
fn note_accepted_flags(a: &ServeArgs) {
    let noted = |flag: &str, why: &str| log(Level::Info, &format!("{flag}: accepted; {why}"));
    if let Some(b) = &a.attention_backend {
        noted(&format!("--attention-backend {b}"), "dllm uses its own block-causal attention kernels");
    }
    if a.trust_remote_code {
        noted("--trust-remote-code", "dllm runs no model code from the checkpoint");
    }
    if a.load.graphs.disable_cuda_graph {
        noted("--disable-cuda-graph", "every step runs eagerly, without CUDA graphs");
    } else if let Some(list) = &a.load.graphs.cuda_graph_bs {
        let max = a.load.graphs.max_bs();
        let given: Vec<String> = list.iter().map(|b| b.to_string()).collect();
        noted(
            &format!("--cuda-graph-bs {}", given.join(" ")),
            &format!("steps of up to {max} running requests are recorded as CUDA graphs, each step shape at its own size (nothing padded to a listed size)"),
        );
    }
    if a.disable_radix_cache {
        noted("--disable-radix-cache", "dllm has no prefix cache to disable");
    }
    if let Some(m) = a.load.mem_fraction_static {
        noted(&format!("--mem-fraction-static {m}"), "the CUDA KV cache takes this fraction of the memory left after the weights");
    }
    if a.enable_metrics {
        noted("--enable-metrics", "metrics are always served at /metrics");
    }
    if a.skip_server_warmup {
        noted("--skip-server-warmup", "no effect here");
    }
    if let Some(d) = &a.dtype {
        noted(&format!("--dtype {d}"), "the weights run as the checkpoint stores them (bf16)");
    }
}

/// Every flag as given (the key masked), for /get_server_info.
/// The decoding entries ("dllm_algorithm", "threshold", ...) are the resolved policy's, added
/// once the checkpoint is loaded.
fn args_json(a: &ServeArgs, chunked_prefill_size: i64) -> serde_json::Value {
    serde_json::json!({
        "model_path": a.model_path,
        "host": a.host,
        "port": a.port,
        "dllm_algorithm_config": a.dllm_algorithm_config,
        "diffusion_block_size": a.diffusion_block_size,
        "max_running_requests": a.max_running_requests,
        "max_queued_requests": a.max_queued_requests,
        "mem_fraction_static": a.load.mem_fraction_static,
        "quantization": a.load.quantization,
        "tp_size": a.load.tp_size,
        "load_format": format!("{:?}", a.load.load_format).to_lowercase(),
        "dp_size": a.dp_size,
        "attention_backend": a.attention_backend,
        "trust_remote_code": a.trust_remote_code,
        "disable_cuda_graph": a.load.graphs.disable_cuda_graph,
        "cuda_graph_max_bs": a.load.graphs.cuda_graph_max_bs,
        "cuda_graph_bs": a.load.graphs.cuda_graph_bs,
        "disable_radix_cache": a.disable_radix_cache,
        "context_length": a.context_length,
        "chunked_prefill_size": chunked_prefill_size,
        "served_model_name": a.served_model_name,
        "api_key": a.api_key.as_ref().map(|_| "<set>"),
        "log_level": a.log_level,
        "device": format!("{:?}", a.device).to_lowercase(),
        "max_body_bytes": a.max_body_bytes,
        "random_seed": a.random_seed,
        "max_prompts_per_request": a.max_prompts_per_request,
        "header_read_timeout": a.header_read_timeout,
        "idle_timeout": a.idle_timeout,
        "max_connections": a.max_connections,
        "allowed_origins": a.allowed_origins,
    })
}
