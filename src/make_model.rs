//! `dllm make-model`: writes a complete LLaDA2 checkpoint in the Hugging Face layout
//! (config.json, sharded safetensors + index, tokenizer files) with seeded random weights.
//! `tiny` is the test/default model; `mini` and `flash` carry the real shapes.

use crate::checkpoint::{expected_tensors, random_init, RandomInit};
use crate::config::{preset, ModelConfig};
use crate::rng::Rng;
use crate::tokenizer::{EOS_TOKEN, MASK_TOKEN, SPECIALS};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Write a checkpoint. Shards are streamed tensor by tensor, so the real shapes never
/// need their full size in memory.
pub fn make_model(preset_name: &str, out: &Path, seed: u64) -> Result<ModelConfig> {
    let mut cfg = preset(preset_name)?;
    let tok = build_tokenizer_json();
    let n_tokens = tok["model"]["vocab"].as_object().map(|v| v.len()).unwrap_or(0);
    if cfg.vocab_size == 0 {
        // Pad like the released models do, so ids with no token exist and are handled.
        cfg.vocab_size = (n_tokens + 1).div_ceil(8) * 8;
        cfg.eos_token_id = Some(token_id(&tok, EOS_TOKEN));
        cfg.mask_token_id = Some(token_id(&tok, MASK_TOKEN));
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    let tensors = expected_tensors(&cfg);
    // Tiny: 2 shards so the sharded path is always exercised; big: ~4 GB shards.
    let total: usize = tensors.iter().map(|(_, s)| s.iter().product::<usize>() * 2).sum();
    let shard_target = if preset_name == "tiny" { total / 2 + 1 } else { 4 << 30 };
    let mut groups: Vec<Vec<(String, Vec<usize>)>> = vec![vec![]];
    let mut acc = 0;
    for t in tensors {
        let b = t.1.iter().product::<usize>() * 2;
        if acc + b > shard_target && !groups.last().unwrap().is_empty() {
            groups.push(vec![]);
            acc = 0;
        }
        acc += b;
        groups.last_mut().unwrap().push(t);
    }
    let n = groups.len();
    let mut rng = Rng::new(seed);
    let mut weight_map = serde_json::Map::new();
    let mut total_size = 0usize;
    for (gi, group) in groups.iter().enumerate() {
        let fname = format!("model-{:05}-of-{:05}.safetensors", gi + 1, n);
        total_size += write_shard(&out.join(&fname), group, &cfg, &mut rng)?;
        for (name, _) in group {
            weight_map.insert(name.clone(), serde_json::Value::String(fname.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});
    write_json(&out.join("model.safetensors.index.json"), &index)?;

    let mut config = serde_json::to_value(&cfg)?;
    let obj = config.as_object_mut().unwrap();
    obj.insert("architectures".into(), serde_json::json!(["LLaDA2MoeModelLM"]));
    obj.insert("num_nextn_predict_layers".into(), serde_json::json!(0));
    write_json(&out.join("config.json"), &config)?;
    write_json(&out.join("tokenizer.json"), &tok)?;
    write_json(
        &out.join("tokenizer_config.json"),
        &serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": EOS_TOKEN, "mask_token": MASK_TOKEN, "pad_token": EOS_TOKEN,
            "model_max_length": cfg.max_position_embeddings,
            "chat_template": crate::tokenizer::LLADA2_CHAT_TEMPLATE,
        }),
    )?;
    write_json(
        &out.join("generation_config.json"),
        &serde_json::json!({"eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.eos_token_id,
                            "mask_token_id": cfg.mask_token_id}),
    )?;
    Ok(cfg)
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(v)? + "\n").with_context(|| format!("writing {}", path.display()))
}

fn write_shard(path: &Path, group: &[(String, Vec<usize>)], cfg: &ModelConfig, rng: &mut Rng) -> Result<usize> {
    // Header: names sorted as the reference writer does; data in the same order.
    let mut sorted: Vec<&(String, Vec<usize>)> = group.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, shape) in &sorted {
        let f32_ = random_init(name, shape, cfg).f32;
        let bytes = shape.iter().product::<usize>() * if f32_ { 4 } else { 2 };
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": if f32_ {"F32"} else {"BF16"}, "shape": shape, "data_offsets": [off, off + bytes]}),
        );
        off += bytes;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut h = serde_json::to_string(&header)?.into_bytes();
    while (h.len() + 8) % 8 != 0 {
        h.push(b' ');
    }
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 22, file);
    w.write_all(&(h.len() as u64).to_le_bytes())?;
    w.write_all(&h)?;
    for (name, shape) in &sorted {
        let RandomInit { mean, std, f32: f32_ } = random_init(name, shape, cfg);
        let n: usize = shape.iter().product();
        let mut buf = Vec::with_capacity(n * if f32_ { 4 } else { 2 });
        for _ in 0..n {
            let x = (mean + std * rng.normal()) as f32;
            if f32_ {
                buf.extend_from_slice(&x.to_le_bytes());
            } else {
                buf.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes());
            }
        }
        w.write_all(&buf)?;
    }
    w.flush()?;
    Ok(off)
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
    for s in SPECIALS {
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
        let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
        make_model("tiny", &tmp, 0).context("making the default tiny model")?;
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Another process may have won the race; either copy is the same model.
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        eprintln!("made the default tiny model in {}", dir.display());
    }
    Ok(dir)
}
