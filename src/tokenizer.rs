//! `tokenizer.json` through the `tokenizers` crate, the checkpoint's chat template (Jinja, as
//! Hugging Face renders it), and the special ids (mask, eos) resolved from the checkpoint's files.

use crate::config::ModelConfig;
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

/// Special tokens of the LLaDA2 tokenizer that the engine and chat template rely on.
pub const EOS_TOKEN: &str = "<|endoftext|>";
pub const MASK_TOKEN: &str = "<|mask|>";
pub const SPECIALS: &[&str] = &[EOS_TOKEN, MASK_TOKEN, "<role>", "</role>", "<|role_end|>", "<think>", "</think>"];

/// LLaDA2's chat format, for checkpoints whose tokenizer_config.json carries no template:
/// `<role>SYSTEM</role>...<|role_end|><role>HUMAN</role>...<|role_end|><role>ASSISTANT</role>`;
/// roles are upper-cased and OpenAI's "user" becomes LLaDA2's HUMAN. make-model writes it into
/// the checkpoints it makes, so the built-in and the checkpoint paths render the same text.
pub const LLADA2_CHAT_TEMPLATE: &str = "{% for message in messages %}{% set role = message['role'] | lower %}\
{% if role == 'user' %}{% set role = 'human' %}{% endif %}<role>{{ role | upper }}</role>{{ message['content'] }}<|role_end|>\
{% endfor %}{% if add_generation_prompt %}<role>ASSISTANT</role>{% endif %}";

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub eos_id: u32,
    pub mask_id: u32,
    pub chat_template: ChatTemplate,
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// Where the chat template came from (the server logs it at startup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    /// `chat_template.jinja` beside the weights (newer transformers save it there).
    JinjaFile,
    /// `chat_template` in tokenizer_config.json.
    TokenizerConfig,
    /// The checkpoint has none: [`LLADA2_CHAT_TEMPLATE`].
    BuiltIn,
}

impl std::fmt::Display for TemplateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TemplateSource::JinjaFile => "chat_template.jinja",
            TemplateSource::TokenizerConfig => "tokenizer_config.json",
            TemplateSource::BuiltIn => "dllm (the checkpoint has none; LLaDA2's format)",
        })
    }
}

/// A checkpoint's chat template, compiled once and rendered per request as Hugging Face's
/// `apply_chat_template` does: Jinja with trimmed blocks, loop controls, Python string methods,
/// `raise_exception`, the special tokens and any `chat_template_kwargs` as variables.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    pub source: TemplateSource,
    /// Special tokens by their tokenizer_config.json names (`bos_token`, `eos_token`, ...).
    special_tokens: serde_json::Map<String, serde_json::Value>,
}

/// The template refused the conversation (`raise_exception`) or failed while rendering.
#[derive(Debug, thiserror::Error)]
#[error("the chat template cannot render these messages: {0}")]
pub struct ChatTemplateError(String);

const TEMPLATE_NAME: &str = "chat";

impl ChatTemplate {
    /// The checkpoint's template: `chat_template.jinja`, else tokenizer_config.json's
    /// `chat_template` (a string, or a list of named templates of which "default" is used),
    /// else the built-in LLaDA2 one.
    pub fn from_checkpoint(dir: &Path) -> Result<Self> {
        let config_path = dir.join("tokenizer_config.json");
        let config = read_json(&config_path)?;
        let special_tokens = config.as_ref().map(special_tokens_of).unwrap_or_default();
        let jinja_path = dir.join("chat_template.jinja");
        if jinja_path.exists() {
            let text = std::fs::read_to_string(&jinja_path).with_context(|| format!("reading {}", jinja_path.display()))?;
            return Self::compile(text, TemplateSource::JinjaFile, special_tokens).with_context(|| jinja_path.display().to_string());
        }
        let from_config = match config.as_ref().and_then(|c| c.get("chat_template")) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(named)) => {
                let default = named.iter().find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"));
                let t = default
                    .and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| anyhow!("{}: chat_template is a list without a template named \"default\"", config_path.display()))?;
                Some(t.to_string())
            }
            Some(_) => bail!("{}: chat_template must be a string or a list of named templates", config_path.display()),
        };
        match from_config {
            Some(text) => Self::compile(text, TemplateSource::TokenizerConfig, special_tokens)
                .with_context(|| format!("{} chat_template", config_path.display())),
            None => Self::compile(LLADA2_CHAT_TEMPLATE.to_string(), TemplateSource::BuiltIn, special_tokens),
        }
    }

    pub fn compile(text: String, source: TemplateSource, special_tokens: serde_json::Map<String, serde_json::Value>) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        // Hugging Face renders with trim_blocks and lstrip_blocks; templates are written for that.
        let syntax = minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build();
        env.set_syntax(syntax.map_err(|e| anyhow!("{e}"))?);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(TEMPLATE_NAME, text).map_err(|e| anyhow!("the chat template does not compile: {e}"))?;
        Ok(ChatTemplate { env, source, special_tokens })
    }

    /// The prompt text for `messages`, ending with the assistant's turn opened.
    /// `kwargs` (OpenAI's `chat_template_kwargs`) become template variables too.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> std::result::Result<String, ChatTemplateError> {
        let mut vars = self.special_tokens.clone();
        vars.insert("add_generation_prompt".into(), true.into());
        vars.insert("tools".into(), serde_json::Value::Null);
        vars.extend(kwargs.iter().map(|(k, v)| (k.clone(), v.clone())));
        vars.insert("messages".into(), serde_json::to_value(messages).map_err(|e| ChatTemplateError(e.to_string()))?);
        let t = self.env.get_template(TEMPLATE_NAME).map_err(|e| ChatTemplateError(e.to_string()))?;
        t.render(minijinja::Value::from(minijinja::value::Serde(&vars))).map_err(|e| ChatTemplateError(render_error(&e)))
    }
}

/// minijinja's message with its detail (e.g. the text passed to `raise_exception`), once.
fn render_error(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) if e.kind() == minijinja::ErrorKind::InvalidOperation => d.to_string(),
        _ => e.to_string(),
    }
}

/// `bos_token`, `eos_token`, ... of tokenizer_config.json: strings, or added-token objects whose
/// `content` is the string.
fn special_tokens_of(config: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    let Some(obj) = config.as_object() else { return Default::default() };
    obj.iter()
        .filter(|(k, _)| k.ends_with("_token"))
        .filter_map(|(k, v)| {
            let s = v.as_str().or_else(|| v.get("content").and_then(|c| c.as_str()))?;
            Some((k.clone(), serde_json::Value::String(s.to_string())))
        })
        .collect()
}

/// The tokenizer in `path` (a tokenizer.json). The tokenizers crate panics on some broken files
/// instead of returning an error (an `expect` in its decoder's deserializer fires on a file cut
/// short inside the decoder; its Precompiled normalizer's on a bad charsmap), so the text is
/// checked as JSON first, which names the usual cause (a truncated download), and a panic left
/// in the crate becomes this error too.
fn read_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer> {
    let cannot = |why: String| anyhow!("cannot load {}: {why}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| cannot(e.to_string()))?;
    serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|e| cannot(format!("not valid JSON ({e}); is it truncated?")))?;
    match std::panic::catch_unwind(|| text.parse::<tokenizers::Tokenizer>()) {
        Ok(parsed) => parsed.map_err(|e| cannot(e.to_string())),
        Err(panic) => {
            let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
            Err(cannot(format!("the tokenizers library failed on it ({})", what.as_deref().unwrap_or("a panic"))))
        }
    }
}

impl Tokenizer {
    pub fn open(dir: &Path, cfg: &ModelConfig) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(anyhow!("tokenizer.json is missing from {}", dir.display()));
        }
        let inner = read_tokenizer(&path)?;
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
        let chat_template = ChatTemplate::from_checkpoint(dir)?;
        Ok(Tokenizer { inner, eos_id, mask_id, chat_template })
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
