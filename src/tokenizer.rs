//! `tokenizer.json` through the `tokenizers` crate, the LLaDA2 chat template, and the
//! special ids (mask, eos) resolved from the checkpoint's files.

use crate::config::ModelConfig;
use anyhow::{anyhow, Context, Result};
use std::path::Path;

/// Special tokens of the LLaDA2 tokenizer that the engine and chat template rely on.
pub const EOS_TOKEN: &str = "<|endoftext|>";
pub const MASK_TOKEN: &str = "<|mask|>";
pub const SPECIALS: &[&str] = &[EOS_TOKEN, MASK_TOKEN, "<role>", "</role>", "<|role_end|>", "<think>", "</think>"];

/// The template the released tokenizer_config.json carries, for tools that read it.
pub const CHAT_TEMPLATE_JINJA: &str = "{% for message in messages %}<role>{{ message['role'] | upper }}</role>{{ message['content'] }}<|role_end|>{% endfor %}{% if add_generation_prompt %}<role>ASSISTANT</role>{% endif %}";

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub eos_id: u32,
    pub mask_id: u32,
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// `<role>SYSTEM</role>...<|role_end|><role>HUMAN</role>...<|role_end|><role>ASSISTANT</role>`:
/// roles are upper-cased, and OpenAI's "user"/"assistant" map to LLaDA2's HUMAN/ASSISTANT.
pub fn apply_chat_template(messages: &[ChatMessage]) -> String {
    let mut s = String::new();
    for m in messages {
        let role = match m.role.to_ascii_lowercase().as_str() {
            "user" | "human" => "HUMAN".to_string(),
            "assistant" => "ASSISTANT".to_string(),
            "system" => "SYSTEM".to_string(),
            other => other.to_ascii_uppercase(),
        };
        s.push_str(&format!("<role>{role}</role>{}<|role_end|>", m.content));
    }
    s.push_str("<role>ASSISTANT</role>");
    s
}

impl Tokenizer {
    pub fn open(dir: &Path, cfg: &ModelConfig) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(anyhow!("tokenizer.json is missing from {}", dir.display()));
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| anyhow!("cannot load {}: {e}", path.display()))?;
        let gen = read_json(&dir.join("generation_config.json"))?;
        let eos_id =
            first_id(&[gen.as_ref().and_then(|g| g.get("eos_token_id")).and_then(id_of), cfg.eos_token_id, inner.token_to_id(EOS_TOKEN)])
                .ok_or_else(|| anyhow!("cannot find the eos token id (config.json, generation_config.json or tokenizer)"))?;
        let mask_id = first_id(&[
            cfg.mask_token_id,
            gen.as_ref().and_then(|g| g.get("mask_token_id")).and_then(id_of),
            inner.token_to_id(MASK_TOKEN),
        ])
        .ok_or_else(|| anyhow!("cannot find the mask token id (config.json or tokenizer's <|mask|>)"))?;
        for (what, id) in [("eos", eos_id), ("mask", mask_id)] {
            if id as usize >= cfg.vocab_size {
                return Err(anyhow!("{what} token id {id} is outside the vocabulary ({})", cfg.vocab_size));
            }
        }
        Ok(Tokenizer { inner, eos_id, mask_id })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| anyhow!("tokenizing failed: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decode, dropping ids the tokenizer has no token for (padding rows of the vocabulary).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let known: Vec<u32> = ids.iter().copied().filter(|&i| self.inner.id_to_token(i).is_some()).collect();
        self.inner.decode(&known, skip_special).unwrap_or_default()
    }

    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        self.inner.token_to_id(t)
    }

    /// The most bytes one token's vocabulary entry takes (added and special tokens included).
    /// Each token covers at most that many bytes of input text: byte-level BPE spells every input
    /// byte as one character of one or two bytes, metaspace spells a 1-byte space as 3-byte `▁`,
    /// byte fallback spells a byte as `<0xNN>`; so a text of `n` bytes needs at least
    /// `n / longest_token_bytes()` tokens.
    pub fn longest_token_bytes(&self) -> usize {
        self.inner.get_vocab(true).keys().map(String::len).max().unwrap_or(1).max(1)
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?))
}

/// `eos_token_id` may be a number or a list (the first is the primary one).
fn id_of(v: &serde_json::Value) -> Option<u32> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().map(|x| x as u32),
        serde_json::Value::Array(a) => a.first().and_then(id_of),
        _ => None,
    }
}

fn first_id(c: &[Option<u32>]) -> Option<u32> {
    c.iter().flatten().next().copied()
}
