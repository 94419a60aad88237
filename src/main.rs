use anyhow::Result;
use clap::{Parser, Subcommand};
use dllm::decode::{Knobs, Policy};
use dllm::engine::GenParams;
use dllm::runtime::{self, Device};
use dllm::tokenizer::ChatMessage;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "dllm", version, about = "Serve block-diffusion LLMs (LLaDA2.0 MoE)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing would only add noise
enum Cmd {
    /// Write a checkpoint in the Hugging Face layout with seeded random weights (tiny: a few MB;
    /// mini: 32.5 GB; flash: 206 GB). The size is checked against the free space first, and the
    /// directory appears only when complete.
    MakeModel {
        #[arg(long, default_value = "tiny")]
        preset: String,
        /// The release whose config layout to write: llada2.0, llada2.1 (2.0's keys, decoded
        /// with JointThreshold) or llada2.2 (its block-routing and edit-token keys: a pool of
        /// expert_capacity experts per block of block_size = 32 positions, 48 for the mini and
        /// flash shapes, 6 of tiny's 16).
        #[arg(long, value_enum, default_value = "llada2.0")]
        family: dllm::config::Family,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write config.json and the tokenizer only, no weights: a model directory to serve with
        /// `--load-format dummy` (random weights on the GPUs).
        #[arg(long)]
        config_only: bool,
        /// `fp8`: write the routed experts as block FP8 (F8_E4M3 weights with F32
        /// `weight_scale_inv` per 128x128 block, as DeepSeek-V3 / SGLang checkpoints store them):
        /// the same draws as the bf16 checkpoint of this seed, quantized.
        #[arg(long, value_enum)]
        quantization: Option<dllm::fp8::Quantization>,
    },
    /// Generate from one prompt (no --model-path: the embedded tiny model).
    Generate(GenerateArgs),
    /// Serve the model over HTTP (SGLang's /generate and flags, OpenAI's /v1 routes).
    Serve(dllm::server::ServeArgs),
    /// Benchmarks: denoising steps vs their floor and the PyTorch baseline, end to end.
    #[command(subcommand)]
    Bench(dllm::bench::cli::BenchCmd),
}

#[derive(clap::Args)]
struct GenerateArgs {
    #[arg(long)]
    model_path: Option<PathBuf>,
    #[arg(long, default_value = "Why did Camus say that Sisyphus was happy?")]
    prompt: String,
    /// Wrap the prompt in the LLaDA2 chat template.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Negative values are accepted here so that the request check (GenParams::validate) names
    /// the problem, as the server does.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 32)]
    block_size: usize,
    /// Decoding algorithm (SGLang's names): LowConfidence (LLaDA2.0), JointThreshold (LLaDA2.1's
    /// unmasking plus token edits) or JointThresholdInDel (LLaDA2.2's, plus delete / insert
    /// edits; greedy only). Default: the checkpoint family's.
    #[arg(long)]
    dllm_algorithm: Option<String>,
    /// Unmask threshold (default: the algorithm's, 0.95 LowConfidence, 0.5 JointThreshold(InDel)).
    #[arg(long, allow_negative_numbers = true)]
    threshold: Option<f32>,
    /// JointThreshold(InDel): a decoded token is rewritten when the model's argmax differs with a
    /// probability above this (default 0).
    #[arg(long, allow_negative_numbers = true)]
    edit_threshold: Option<f32>,
    /// JointThreshold(InDel): edit-only steps a block may take once it has no (original) masks
    /// (default 16).
    #[arg(long)]
    max_post_edit_steps: Option<usize>,
    /// Denoising steps per block at most (LowConfidence; default: the block size).
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long, value_enum, default_value = "auto")]
    device: Device,
    #[command(flatten)]
    load: runtime::LoadFlags,
    /// Print {"text", "output_ids", "steps", ...} as JSON.
    #[arg(long)]
    json: bool,
    /// Time denoising steps on random device weights of this preset (e.g. mini) instead of a
    /// checkpoint: a prompt of --prefix-len random ids, --max-new-tokens generated (CUDA only).
    #[arg(long)]
    random_weights: Option<String>,
    #[arg(long, default_value_t = 1024)]
    prefix_len: usize,
    /// With --random-weights: time every kernel launch with CUDA events and print the per-kernel
    /// breakdown (the forward is queued behind a held stream, so step times include the hold).
    #[arg(long)]
    profile_kernels: bool,
    /// Most tokens one forward carries; a longer prompt is prefilled in chunks of whole blocks
    /// first. -1 (any value <= 0) disables chunking (SGLang's flag).
    #[arg(long, allow_negative_numbers = true, default_value_t = dllm::engine::DEFAULT_CHUNKED_PREFILL as i64)]
    chunked_prefill_size: i64,
}

fn main() {
    let start = std::time::Instant::now();
    if let Err(e) = run(Cli::parse(), start) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli, start: std::time::Instant) -> Result<()> {
    match cli.cmd {
        Cmd::MakeModel { preset, family, out, seed, config_only, quantization } => {
            let mut plan = dllm::make_model::Plan::for_family(&preset, family, seed, quantization)?;
            if config_only {
                plan = plan.without_weights();
            }
            eprintln!("writing {} to {}", dllm::make_model::human_bytes(plan.total_bytes()), out.display());
            plan.write(&out)?;
            let cfg = plan.cfg;
            eprintln!(
                "wrote {preset} {} (hidden {}, {} layers, {} experts, vocab {}) to {}",
                family.name(),
                cfg.hidden_size,
                cfg.num_hidden_layers,
                cfg.num_experts,
                cfg.vocab_size,
                out.display()
            );
            Ok(())
        }
        Cmd::Generate(a) => generate(a),
        Cmd::Serve(mut a) => {
            a.model_path = Some(dllm::make_model::resolve_model(a.model_path.as_deref())?);
            dllm::server::run(a)
        }
        Cmd::Bench(b) => dllm::bench::cli::run(b, start),
    }
}

fn generate(a: GenerateArgs) -> Result<()> {
    if let Some(p) = &a.random_weights {
        if a.load.tp_size > 1 {
            anyhow::bail!(
                "--random-weights times one GPU; for {p} over {} GPUs run `dllm bench step --preset {p} --tp-size {}`",
                a.load.tp_size,
                a.load.tp_size
            );
        }
        let blocks = a.max_new_tokens.div_ceil(a.block_size).max(1);
        println!(
            "{}",
            dllm::bench::random_weights::random_weights_steps(
                p,
                a.prefix_len,
                a.block_size,
                blocks,
                a.seed,
                a.profile_kernels,
                a.load.quantization
            )?
        );
        return Ok(());
    }
    if a.model_path.is_none() {
        // Said once, so that the noise it prints is not taken for a bug.
        eprintln!(
            "note: no --model-path, so this runs the embedded tiny model, whose weights are random: its text is noise. \
             Point --model-path at a LLaDA2 checkpoint (e.g. LLaDA2.0-mini) for real text."
        );
    }
    let dir = dllm::make_model::resolve_model(a.model_path.as_deref())?;
    let mut m = runtime::load_with(&dir, &a.load.options(a.device))?;
    m.engine.set_max_forward_tokens(dllm::engine::forward_budget(a.chunked_prefill_size));
    let text = if a.chat {
        m.tokenizer.chat_template.render(&[ChatMessage { role: "user".into(), content: a.prompt.clone() }], &Default::default())?
    } else {
        a.prompt.clone()
    };
    let prompt = m.tokenizer.encode(&text)?;
    let knobs = Knobs { threshold: a.threshold, edit_threshold: a.edit_threshold, max_post_edit_steps: a.max_post_edit_steps };
    let family = m.engine.config().family();
    let policy =
        Policy::for_request(a.dllm_algorithm.as_deref().unwrap_or(family.default_algorithm()), &knobs).map_err(anyhow::Error::msg)?;
    let params = GenParams {
        max_new_tokens: a.max_new_tokens,
        block_size: a.block_size,
        steps: a.steps,
        policy,
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        seed: a.seed,
        ..GenParams::default()
    };
    let t0 = std::time::Instant::now();
    let out = m.engine.generate(prompt.clone(), params)?;
    let secs = t0.elapsed().as_secs_f64();
    let text = m.tokenizer.decode(&out.output_ids, true);
    if a.json {
        let v = serde_json::json!({
            "text": text,
            "output_ids": out.output_ids,
            "prompt_ids": prompt,
            "steps": out.steps,
            "blocks": out.blocks,
            "dllm_algorithm": policy.name(),
            "finish_reason": match out.finish { dllm::engine::Finish::Stop(t) => serde_json::json!({"type": "stop", "matched": t}),
                                                dllm::engine::Finish::Length => serde_json::json!({"type": "length"}) },
            "seconds": secs,
            "backend": m.engine.backend_name(),
            "model_path": dir,
        });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!("{text}");
        eprintln!(
            "[{} tokens in {} steps over {} blocks, {:.3}s, {}]",
            out.output_ids.len(),
            out.steps,
            out.blocks,
            secs,
            m.engine.backend_name()
        );
    }
    Ok(())
}
