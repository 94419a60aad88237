//! What one request may hold, checked on the parsed body before any of it is tokenized: how
//! many prompts, and how many bytes each prompt's text may have.

use super::errors::{ApiError, ApiResult};
use serde_json::Value;

/// Which route's body: each names its prompts differently.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PromptField {
    /// `/generate`: `text` (a string or a list) or `input_ids` (a list, or a list of lists).
    Generate,
    /// `/v1/completions`: `prompt` (a string, a list of strings, token ids or lists of them).
    Completions,
    /// `/v1/chat/completions`: the `messages`, rendered into one prompt.
    Chat,
    /// `/v1/responses`: `instructions` and `input` (a string or messages), rendered into one.
    Responses,
}

#[derive(Debug, Clone)]
pub struct PromptLimits {
    /// `--max-prompts-per-request`.
    pub max_prompts: usize,
    /// The longest prompt text, in bytes, that the context could hold.
    pub max_prompt_bytes: usize,
    context_len: usize,
    longest_token_bytes: usize,
}

impl PromptLimits {
    /// A prompt can be at most `context_len` tokens, and no token covers more input bytes than
    /// the longest vocabulary entry has (`Tokenizer::longest_token_bytes`); so a text longer than
    /// their product cannot fit, whatever it holds, and is refused without tokenizing it (which
    /// costs about a microsecond and a few hundred bytes of memory per byte). The one way a text
    /// could tokenize shorter is a normalizer that deletes characters; byte-level BPE, which
    /// LLaDA2 uses, deletes none.
    pub fn new(max_prompts: usize, context_len: usize, longest_token_bytes: usize) -> Self {
        let longest_token_bytes = longest_token_bytes.max(1);
        PromptLimits { max_prompts, max_prompt_bytes: context_len.saturating_mul(longest_token_bytes), context_len, longest_token_bytes }
    }

    /// 400 when `text` has more bytes than any prompt the context could hold.
    pub fn check_text(&self, text: &str, at: &str) -> ApiResult<()> {
        self.check_bytes(text.len(), at)
    }

    fn check_bytes(&self, n: usize, at: &str) -> ApiResult<()> {
        if n > self.max_prompt_bytes {
            return Err(ApiError::bad_request(format!(
                "{at} has {n} bytes, more than any prompt the context can hold: {} tokens of at most {} bytes each make {} bytes",
                self.context_len, self.longest_token_bytes, self.max_prompt_bytes
            )));
        }
        Ok(())
    }

    /// Count a request's prompts and measure their texts, before anything is tokenized: 400 if it
    /// holds more than `max_prompts` or a text longer than `max_prompt_bytes`. Together these
    /// bound a request's tokenization work by `max_prompts * max_prompt_bytes` bytes. A body of
    /// the wrong shape passes here; the route's parser answers it.
    pub fn check_body(&self, field: PromptField, body: &Value) -> ApiResult<()> {
        let count = match field {
            PromptField::Generate => match (body.get("text"), body.get("input_ids")) {
                (Some(t), _) if !t.is_null() => self.check_texts(t, "text")?,
                (_, Some(Value::Array(a))) if a.iter().all(Value::is_array) => a.len(),
                _ => 1,
            },
            PromptField::Completions => match body.get("prompt") {
                Some(Value::Array(a)) if a.iter().all(Value::is_array) => a.len(),
                Some(p @ Value::Array(a)) if a.iter().all(Value::is_string) => self.check_texts(p, "prompt")?,
                Some(p @ Value::String(_)) => self.check_texts(p, "prompt")?,
                _ => 1,
            },
            PromptField::Chat => {
                // The rendered prompt holds every message's text, and more.
                self.check_bytes(chat_text_bytes(body.get("messages")), "messages")?;
                1
            }
            PromptField::Responses => {
                let input = match body.get("input") {
                    Some(Value::String(s)) => s.len(),
                    other => chat_text_bytes(other),
                };
                let instructions = body.get("instructions").and_then(Value::as_str).map_or(0, str::len);
                self.check_bytes(input.saturating_add(instructions), "input")?;
                1
            }
        };
        // Each of `n` samples of a prompt is a job of its own in the queue, so the cap counts them.
        let n = samples_per_prompt(field, body);
        let jobs = count.saturating_mul(n);
        if jobs > self.max_prompts {
            let what = if n > 1 { format!("{count} prompts x n = {n} samples ({jobs} sequences)") } else { format!("{count} prompts") };
            return Err(ApiError::bad_request(format!(
                "the request holds {what}; at most {} are allowed per request (--max-prompts-per-request)",
                self.max_prompts
            )));
        }
        Ok(())
    }

    /// A string, or a list of strings: check each text; the number of prompts.
    fn check_texts(&self, v: &Value, at: &str) -> ApiResult<usize> {
        match v {
            Value::String(s) => self.check_text(s, at).map(|_| 1),
            Value::Array(a) => {
                if a.len() > self.max_prompts {
                    return Ok(a.len());
                }
                for (i, s) in a.iter().enumerate() {
                    if let Some(s) = s.as_str() {
                        self.check_text(s, &format!("{at}[{i}]"))?;
                    }
                }
                Ok(a.len())
            }
            _ => Ok(1),
        }
    }
}

/// The bytes of every message's text (a string `content`, or its text parts).
fn chat_text_bytes(messages: Option<&Value>) -> usize {
    let Some(Value::Array(ms)) = messages else { return 0 };
    let part_bytes = |p: &Value| p.get("text").and_then(Value::as_str).map_or(0, str::len);
    ms.iter()
        .map(|m| match m.get("content") {
            Some(Value::String(s)) => s.len(),
            Some(Value::Array(parts)) => parts.iter().map(part_bytes).sum(),
            _ => 0,
        })
        .fold(0usize, usize::saturating_add)
}

/// The `n` a request asks for (SGLang: `sampling_params.n`, the first one's for a batch; OpenAI:
/// `n`); 1 when absent or malformed, which the route's parser then answers.
fn samples_per_prompt(field: PromptField, body: &Value) -> usize {
    let n = match field {
        PromptField::Generate => match body.get("sampling_params") {
            Some(Value::Array(a)) => a.first().and_then(|p| p.get("n")),
            Some(p) => p.get("n"),
            None => None,
        },
        PromptField::Completions | PromptField::Chat | PromptField::Responses => body.get("n"),
    };
    n.and_then(Value::as_u64).map_or(1, |n| n.max(1) as usize)
}
