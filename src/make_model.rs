//! `dllm make-model`: writes a complete LLaDA2 checkpoint in the Hugging Face layout
//! (config.json, sharded safetensors + index, tokenizer files) with seeded random weights.
//! `tiny` is the test/default model; `mini` and `flash` carry the real shapes (tens of GB).
//!
//! Every file is planned before a byte is written ([`Plan`]), so its size is known exactly up
//! front and checked against the free space; the files go into a hidden sibling directory that is
//! renamed into place only when complete, and removed on any error: a failed or interrupted run
//! never leaves something that looks like a checkpoint.

use crate::checkpoint::{expected_tensors, random_init, required_dtype, DType, RandomInit};
use crate::config::{preset, Family, ModelConfig};
use crate::fp8::Quantization;
use crate::progress;
use crate::rng::{Rng, NORMAL_DRAWS};
use crate::tokenizer::{EOS_TOKEN, MASK_TOKEN, SPECIALS};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A checkpoint to write: every file's name and size, the shards' headers included.
pub struct Plan {
    pub cfg: ModelConfig,
    seed: u64,
    shards: Vec<ShardPlan>,
    /// config.json, the index and the tokenizer files, with their contents.
    small_files: Vec<(String, Vec<u8>)>,
}

struct ShardPlan {
    file: String,
    /// The 8-byte length and the JSON header, padded as the reference writer pads it.
    header: Vec<u8>,
    /// In file order (sorted by name, as the reference writer sorts them).
    tensors: Vec<(String, Vec<usize>)>,
    data_bytes: u64,
}

impl Plan {
    pub fn new(preset_name: &str, seed: u64) -> Result<Plan> {
        Self::quantized(preset_name, seed, None)
    }

    /// With `Some(Fp8)` the routed experts are written as block FP8 (F8_E4M3 weights and F32
    /// `weight_scale_inv`, config.json's `quantization_config` saying so): the same draws as the
    /// bf16 checkpoint of this seed, quantized by fp8.rs, so the two differ only by the
    /// quantization.
    pub fn quantized(preset_name: &str, seed: u64, quantization: Option<Quantization>) -> Result<Plan> {
        Self::for_family(preset_name, Family::Llada20, seed, quantization)
    }

    /// A checkpoint of `family`'s release: its config.json in that release's layout (2.1 has
    /// 2.0's keys and says which it is in `_name_or_path`; 2.2 has its own keys, see
    /// [`family_config`]), the same draws for the weights of a shape.
    pub fn for_family(preset_name: &str, family: Family, seed: u64, quantization: Option<Quantization>) -> Result<Plan> {
        let mut cfg = preset(preset_name)?.quantized(quantization);
        let extra: &[&str] = if family == Family::Llada22 { &[DELETE_TOKEN, SPLIT_TOKEN] } else { &[] };
        let tok = build_tokenizer_json_with(extra);
        let n_tokens = tok["model"]["vocab"].as_object().map(|v| v.len()).unwrap_or(0);
        if cfg.vocab_size == 0 {
            // Pad like the released models do, so ids with no token exist and are handled.
            cfg.vocab_size = (n_tokens + 1).div_ceil(8) * 8;
            cfg.eos_token_id = Some(token_id(&tok, EOS_TOKEN));
            cfg.mask_token_id = Some(token_id(&tok, MASK_TOKEN));
            if family == Family::Llada22 {
                cfg.delete_token_id = Some(token_id(&tok, DELETE_TOKEN));
                cfg.split_token_id = Some(token_id(&tok, SPLIT_TOKEN));
            }
        } else if family == Family::Llada22 {
            // The released vocabulary's edit tokens sit next to its mask and EOS.
            cfg.delete_token_id = Some(RELEASED_DELETE_ID);
            cfg.split_token_id = Some(RELEASED_SPLIT_ID);
        }
        let cfg = family_config(cfg, family, preset_name);
        let tensors = expected_tensors(&cfg);
        // Tiny: 2 shards so the sharded path is always exercised; big: ~4 GB shards.
        // Shards are cut by the bf16 sizes, and a scale tensor goes with its weight: an fp8
        // checkpoint then holds the bf16 one's tensors in the same files and order (each shard
        // sorted by name, a scale right after its weight), so it draws the same stream.
        let is_scale = |name: &str| required_dtype(&cfg, name) == Some(DType::F32);
        let total: usize = tensors.iter().filter(|(n, _)| !is_scale(n)).map(|(_, s)| s.iter().product::<usize>() * 2).sum();
        let shard_target = if preset_name == "tiny" { total / 2 + 1 } else { 4 << 30 };
        let mut groups: Vec<Vec<(String, Vec<usize>)>> = vec![vec![]];
        let mut acc = 0;
        for t in tensors {
            if is_scale(&t.0) {
                groups.last_mut().unwrap().push(t);
                continue;
            }
            let b = t.1.iter().product::<usize>() * 2;
            if acc + b > shard_target && !groups.last().unwrap().is_empty() {
                groups.push(vec![]);
                acc = 0;
            }
            acc += b;
            groups.last_mut().unwrap().push(t);
        }
        let n = groups.len();
        let mut shards = vec![];
        let mut weight_map = serde_json::Map::new();
        for (gi, group) in groups.into_iter().enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", gi + 1, n);
            for (name, _) in &group {
                weight_map.insert(name.clone(), serde_json::Value::String(file.clone()));
            }
            shards.push(plan_shard(file, group, &cfg)?);
        }
        let total_size: u64 = shards.iter().map(|s| s.data_bytes).sum();
        let index = serde_json::json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});

        let config = config_json(&cfg, family)?;
        let tokenizer_config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": EOS_TOKEN, "mask_token": MASK_TOKEN, "pad_token": EOS_TOKEN,
            "model_max_length": cfg.max_position_embeddings,
            "chat_template": crate::tokenizer::LLADA2_CHAT_TEMPLATE,
        });
        let generation_config = serde_json::json!({"eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.eos_token_id,
                            "mask_token_id": cfg.mask_token_id});
        let mut small_files = vec![];
        for (name, v) in [
            ("model.safetensors.index.json", &index),
            ("config.json", &config),
            ("tokenizer.json", &tok),
            ("tokenizer_config.json", &tokenizer_config),
            ("generation_config.json", &generation_config),
        ] {
            small_files.push((name.to_string(), (serde_json::to_string_pretty(v)? + "\n").into_bytes()));
        }
        Ok(Plan { cfg, seed, shards, small_files })
    }

    /// The config, tokenizer and generation config only, no weights: a model directory for
    /// `--load-format dummy` (random weights drawn on the GPUs), for shapes whose checkpoint
    /// does not fit the disk (flash: 206 GB).
    pub fn without_weights(mut self) -> Plan {
        self.shards.clear();
        self.small_files.retain(|(name, _)| name != "model.safetensors.index.json");
        self
    }

    /// Exactly the bytes [`Plan::write`] puts on disk.
    pub fn total_bytes(&self) -> u64 {
        let shards: u64 = self.shards.iter().map(|s| s.header.len() as u64 + s.data_bytes).sum();
        shards + self.small_files.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    }

    /// Write the checkpoint to `out`, which must not exist or be an empty directory. Nothing is
    /// left behind on an error: the files go to a hidden sibling that is renamed into place at
    /// the end, or removed.
    pub fn write(&self, out: &Path) -> Result<()> {
        if out.exists() {
            let empty_dir = std::fs::read_dir(out).map(|mut d| d.next().is_none()).unwrap_or(false);
            if !empty_dir {
                bail!("{} already exists; make-model writes a new checkpoint directory (remove it or choose another --out)", out.display());
            }
        }
        let name = out.file_name().with_context(|| format!("--out {} names no directory", out.display()))?;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        remove_stale_partials(&parent, &name.to_string_lossy());
        let free = fs4::available_space(&parent).with_context(|| format!("reading the free space on {}", parent.display()))?;
        check_free_space(self.total_bytes(), free, &parent)?;
        let partial = PartialDir::create(parent.join(format!(".{}.partial-{}", name.to_string_lossy(), std::process::id())))?;
        self.write_files(&partial.path)?;
        // rename(2) replaces an empty directory and refuses a non-empty one (another writer won).
        std::fs::rename(&partial.path, out).with_context(|| format!("moving the finished checkpoint to {}", out.display()))?;
        partial.keep();
        Ok(())
    }

    fn write_files(&self, dir: &Path) -> Result<()> {
        let bar = progress::bytes(self.total_bytes(), "writing the checkpoint");
        let mut rng = Rng::new(self.seed);
        let mut scales = Scales::default();
        for s in &self.shards {
            write_shard(&dir.join(&s.file), s, &self.cfg, &mut rng, &mut scales, &bar)?;
        }
        for (name, bytes) in &self.small_files {
            let path = dir.join(name);
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
            bar.inc(bytes.len() as u64);
        }
        bar.finish_and_clear();
        Ok(())
    }
}

/// A directory being written: removed, with what is in it, when dropped before [`PartialDir::keep`]
/// (an error, or a panic, anywhere in the write).
struct PartialDir {
    path: PathBuf,
    keep: bool,
}

impl PartialDir {
    fn create(path: PathBuf) -> Result<Self> {
        let _ = std::fs::remove_dir_all(&path); // left by a run with our pid that was killed
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(PartialDir { path, keep: false })
    }
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for PartialDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A killed make-model (Ctrl-C, `timeout`) never runs [`PartialDir`]'s drop: remove the hidden
/// partial directories for `name` whose writer process is gone, before the free space is counted
/// (a killed mini write leaves up to 32 GB).
fn remove_stale_partials(parent: &Path, name: &str) {
    let prefix = format!(".{name}.partial-");
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(pid) = file_name.to_str().and_then(|f| f.strip_prefix(&prefix)).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            eprintln!("removing {}, left by a make-model that was killed", e.path().display());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Refuse to start a write of `need` bytes where only `available` are free.
pub fn check_free_space(need: u64, available: u64, dir: &Path) -> Result<()> {
    if need > available {
        bail!("the checkpoint needs {}, {} free on {}", human_bytes(need), human_bytes(available), dir.display());
    }
    Ok(())
}

/// `31.9 GB`, `2.9 MB` (decimal units, as disks are sold and `df -H` counts).
pub fn human_bytes(b: u64) -> String {
    if b >= 1_000_000_000 {
        format!("{:.1} GB", b as f64 / 1e9)
    } else {
        format!("{:.1} MB", b as f64 / 1e6)
    }
}

/// LLaDA2.2's edit tokens in make-model's small tokenizer (the release's own spelling is not
/// needed: the engine reads their ids from config.json, never these strings).
const DELETE_TOKEN: &str = "<|delete|>";
const SPLIT_TOKEN: &str = "<|split|>";
/// LLaDA2.2's `expert_capacity`: the released models' pool, and the tiny shape's (16 experts, 4
/// per token).
const RELEASED_EXPERT_CAPACITY: usize = 48;
const TINY_EXPERT_CAPACITY: usize = 6;

/// Their ids in the released 157184-token vocabulary (mini and flash shapes).
const RELEASED_DELETE_ID: u32 = 156930;
const RELEASED_SPLIT_ID: u32 = 156931;

/// `cfg` as `family`'s release writes it: where it comes from (`_name_or_path`), and for 2.2
/// the 128K context, block routing's keys and RoPE settings in `rope_parameters`.
pub fn family_config(mut cfg: ModelConfig, family: Family, preset_name: &str) -> ModelConfig {
    cfg.name_or_path = Some(family.hub_name(preset_name));
    if family == Family::Llada22 {
        cfg.max_position_embeddings = 131072;
        // 2.2 routes per block, without expert groups (n_group / topk_group are not written).
        cfg.n_group = 1;
        cfg.topk_group = 1;
        // Block routing: per block of 32 positions (the decode block) a pool of 48 experts (the
        // released value); the tiny shape's 16 experts get a pool of 6, so that the pool
        // constrains its top-4 choices.
        cfg.block_size = Some(32);
        let capacity = if preset_name == "tiny" { TINY_EXPERT_CAPACITY } else { RELEASED_EXPERT_CAPACITY };
        cfg.expert_capacity = Some(serde_json::json!(capacity));
        cfg.rope_parameters = Some(serde_json::json!({"rope_type": "default", "rope_theta": cfg.rope_theta}));
    }
    cfg
}

/// config.json: the config's own fields, plus every key the released LLaDA2 configs carry that
/// the engine does not need, with the released values. The official modeling code's defaults
/// differ for several of them (`use_bias` true, dropouts 0.1, `pad_token_id` 126081), so a
/// config without them would load there as another model.
fn config_json(cfg: &ModelConfig, family: Family) -> Result<serde_json::Value> {
    let mut config = serde_json::to_value(cfg)?;
    let obj = config.as_object_mut().context("the config serialises to an object")?;
    let released = serde_json::json!({
        "architectures": ["LLaDA2MoeModelLM"],
        "auto_map": {
            "AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
            "AutoModel": "modeling_llada2_moe.LLaDA2MoeModel",
            "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM"
        },
        "attention_dropout": 0.0,
        "embedding_dropout": 0.0,
        "output_dropout": 0.0,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "max_window_layers": cfg.num_hidden_layers,
        "moe_router_enable_expert_bias": true,
        "moe_shared_expert_intermediate_size": cfg.moe_shared_expert_intermediate_size.unwrap_or(cfg.moe_intermediate_size),
        "norm_head": false,
        "norm_softmax": false,
        "norm_topk_prob": true,
        "num_nextn_predict_layers": 0,
        "output_router_logits": false,
        "pad_token_id": cfg.eos_token_id,
        "rope_scaling": null,
        "router_dtype": "fp32",
        "use_bias": false,
        "use_cache": true,
        "use_rmsnorm": true,
        "use_sliding_window": false,
    });
    for (k, v) in released.as_object().context("a JSON object")? {
        obj.entry(k.clone()).or_insert(v.clone());
    }
    // The f32 written as its shortest decimal (1e-6), not as the f64 nearest to the f32
    // (9.999999974752427e-7): the released files' spelling, and the same f32 read back.
    let eps: f64 = cfg.rms_norm_eps.to_string().parse()?;
    obj.insert("rms_norm_eps".into(), eps.into());
    if family == Family::Llada22 {
        for k in ["n_group", "topk_group", "rope_theta", "rope_scaling"] {
            obj.remove(k);
        }
    }
    Ok(config)
}

/// Write a checkpoint (see [`Plan`]).
pub fn make_model(preset_name: &str, out: &Path, seed: u64) -> Result<ModelConfig> {
    make_model_quantized(preset_name, out, seed, None)
}

/// [`make_model`] with the routed experts as `quantization` says (see [`Plan::quantized`]).
pub fn make_model_quantized(preset_name: &str, out: &Path, seed: u64, quantization: Option<Quantization>) -> Result<ModelConfig> {
    let plan = Plan::quantized(preset_name, seed, quantization)?;
    plan.write(out)?;
    Ok(plan.cfg)
}

fn plan_shard(file: String, mut tensors: Vec<(String, Vec<usize>)>, cfg: &ModelConfig) -> Result<ShardPlan> {
    // Header: names sorted as the reference writer does; data in the same order.
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, shape) in &tensors {
        let dtype = stored_dtype(name, shape, cfg);
        let bytes = shape.iter().product::<usize>() * dtype.size();
        let dtype = match dtype {
            DType::F32 => "F32",
            DType::F8E4M3 => "F8_E4M3",
            DType::BF16 | DType::F16 => "BF16",
        };
        header.insert(name.clone(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [off, off + bytes]}));
        off += bytes;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut h = serde_json::to_string(&header)?.into_bytes();
    while (h.len() + 8) % 8 != 0 {
        h.push(b' ');
    }
    let mut with_len = (h.len() as u64).to_le_bytes().to_vec();
    with_len.extend_from_slice(&h);
    Ok(ShardPlan { file, header: with_len, tensors, data_bytes: off as u64 })
}

/// The dtype make-model writes a tensor in: what the config requires (fp8 experts and their
/// scales), else f32 or bf16 as the random rule says.
fn stored_dtype(name: &str, shape: &[usize], cfg: &ModelConfig) -> DType {
    required_dtype(cfg, name).unwrap_or(if random_init(name, shape, cfg).f32 { DType::F32 } else { DType::BF16 })
}

/// The block scales of fp8 weights already written, until their `_scale_inv` tensor is (it
/// follows its weight in the tensor order, possibly in the next shard).
type Scales = std::collections::HashMap<String, Vec<f32>>;

/// Shards are streamed tensor by tensor, so the real shapes never need their full size in memory.
/// Elements drawn per parallel piece of a random tensor: small enough that one expert matrix
/// (mini: 512 x 2048, 1M elements) spreads over the cores, big enough (a millisecond of work)
/// that handing pieces out costs nothing.
const RANDOM_PIECE: usize = 1 << 16;

/// `n` draws of mean + std * N(0, 1) as little-endian f32 or bf16 bytes: the same stream as
/// drawing element by element from `rng`, made in parallel pieces that each start from the
/// generator skipped to their first element (mini's 32.5 GB were one core's work: 55 MB/s on the
/// H200 host, whose disk writes 1.5 GB/s).
fn random_bytes(rng: &mut Rng, n: usize, mean: f64, std: f64, f32_: bool) -> Vec<u8> {
    let elem = if f32_ { 4 } else { 2 };
    let mut buf = vec![0u8; n * elem];
    let start = rng.clone();
    buf.par_chunks_mut(RANDOM_PIECE * elem).enumerate().for_each(|(piece, out)| {
        let mut r = start.clone();
        r.skip((piece * RANDOM_PIECE) as u64 * NORMAL_DRAWS);
        for o in out.chunks_exact_mut(elem) {
            let x = (mean + std * r.normal()) as f32;
            if f32_ {
                o.copy_from_slice(&x.to_le_bytes());
            } else {
                o.copy_from_slice(&half::bf16::from_f32(x).to_le_bytes());
            }
        }
    });
    rng.skip(n as u64 * NORMAL_DRAWS);
    buf
}

fn write_shard(
    path: &Path,
    s: &ShardPlan,
    cfg: &ModelConfig,
    rng: &mut Rng,
    scales: &mut Scales,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 22, file);
    let write_err = || format!("writing {}", path.display());
    w.write_all(&s.header).with_context(write_err)?;
    bar.inc(s.header.len() as u64);
    for (name, shape) in &s.tensors {
        let RandomInit { mean, std, f32: f32_ } = random_init(name, shape, cfg);
        let n: usize = shape.iter().product();
        let buf = match required_dtype(cfg, name) {
            None => random_bytes(rng, n, mean, std, f32_),
            // The bf16 checkpoint's draw of this weight, quantized; its scales wait for their tensor.
            Some(DType::F8E4M3) => {
                let bf16 = random_bytes(rng, n, mean, std, false);
                let w: Vec<f32> = bf16.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
                let q = crate::fp8::quantize(&w, shape[0], shape[1])?;
                scales.insert(crate::fp8::scale_name(name), q.scale_inv);
                q.codes
            }
            Some(_) => {
                let s = scales.remove(name).with_context(|| format!("{name} is written before its weight"))?;
                s.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
        };
        w.write_all(&buf).with_context(write_err)?;
        bar.inc(buf.len() as u64);
    }
    w.flush().with_context(write_err)?;
    Ok(())
}

fn token_id(tok: &serde_json::Value, t: &str) -> u32 {
    tok["model"]["vocab"][t].as_u64().expect("special token in vocab") as u32
}

/// GPT-2 style byte -> printable char map used by byte-level BPE.
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!'..=b'~').chain(0xA1..=0xAC).chain(0xAE..=0xFF).map(|b| b as u32).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..=255u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec![' '; 256];
    for (b, c) in bs.into_iter().zip(cs) {
        out[b as usize] = char::from_u32(c).unwrap();
    }
    out
}

/// A byte-level BPE tokenizer in the `tokenizers` JSON format: all 256 bytes, a few English
/// merges, and the LLaDA2 special tokens.
pub fn build_tokenizer_json() -> serde_json::Value {
    build_tokenizer_json_with(&[])
}

/// [`build_tokenizer_json`] with `extra` special tokens after the LLaDA2 ones.
fn build_tokenizer_json_with(extra: &[&str]) -> serde_json::Value {
    let chars = byte_chars();
    let mut vocab: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    let sp = chars[b' ' as usize];
    let merges_src: Vec<(String, String)> = [
        ("t", "h"),
        ("th", "e"),
        ("i", "n"),
        ("e", "r"),
        ("a", "n"),
        ("o", "n"),
        ("r", "e"),
        ("e", "s"),
        ("a", "t"),
        ("e", "n"),
        ("o", "u"),
        ("i", "s"),
        ("a", "r"),
        ("o", "r"),
        ("e", "d"),
        ("i", "t"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .chain(["t", "a", "s", "w", "the", "i", "o", "h"].iter().map(|b| (sp.to_string(), b.to_string())))
    .collect();
    let mut merges = vec![];
    for (a, b) in merges_src {
        let m = format!("{a}{b}");
        if !vocab.contains(&m) {
            vocab.push(m);
        }
        merges.push(serde_json::json!([a, b]));
    }
    let mut added = vec![];
    for s in SPECIALS.iter().chain(extra) {
        added.push(serde_json::json!({"id": vocab.len(), "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true}));
        vocab.push(s.to_string());
    }
    let vocab_map: serde_json::Map<String, serde_json::Value> =
        vocab.iter().enumerate().map(|(i, t)| (t.clone(), serde_json::json!(i))).collect();
    let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab_map, "merges": merges}
    })
}

/// Where the embedded default (the tiny model, seed 0) lives once made.
pub fn default_model_dir() -> PathBuf {
    let base = std::env::var_os("DLLM_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("dllm")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache").join("dllm")))
        .unwrap_or_else(|| std::env::temp_dir().join("dllm"));
    base.join(format!("tiny-seed0-v{}", env!("CARGO_PKG_VERSION")))
}

/// The model directory to use: the given one, or the tiny default, made on first use.
pub fn resolve_model(path: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = path {
        return Ok(p.to_path_buf());
    }
    let dir = default_model_dir();
    if !dir.join("config.json").exists() {
        match make_model("tiny", &dir, 0) {
            Ok(_) => eprintln!("made the default tiny model in {}", dir.display()),
            // Another process may have won the race; either copy is the same model.
            Err(_) if dir.join("config.json").exists() => {}
            Err(e) => return Err(e.context("making the default tiny model")),
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_in_pieces_are_the_sequential_stream() {
        for f32_ in [false, true] {
            let n = RANDOM_PIECE * 2 + 12345;
            let mut seq = Rng::new(3);
            let mut want = vec![];
            for _ in 0..n {
                let x = (0.5 + 0.02 * seq.normal()) as f32;
                if f32_ {
                    want.extend_from_slice(&x.to_le_bytes());
                } else {
                    want.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes());
                }
            }
            let mut par = Rng::new(3);
            assert!(random_bytes(&mut par, n, 0.5, 0.02, f32_) == want, "f32 {f32_}");
            assert_eq!(par.next_u64(), seq.next_u64(), "the generator ends where the sequential one does");
        }
    }
}
