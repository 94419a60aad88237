//! `config.json` -> [`ModelConfig`], validated so that every later size computation is safe.

use anyhow::{bail, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
/// Each message carries its cause (`{cause}`), so none is chained as a `source` too: an error
/// printed with its chain would say the cause twice.
pub enum ConfigError {
    #[error("cannot read {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("{path} is not valid config JSON: {cause}")]
    Json { path: String, cause: serde_json::Error },
    #[error("unsupported model_type {0:?}: dllm serves LLaDA2 MoE checkpoints (model_type \"llada2_moe\")")]
    ModelType(String),
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The fields of a LLaDA2 MoE `config.json` the engine uses. Unknown keys are ignored,
/// since HF configs carry many that do not change the forward.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct ModelConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub intermediate_size: usize,
    pub moe_intermediate_size: usize,
    pub num_experts: usize,
    pub num_experts_per_tok: usize,
    /// HF's default is 0 (no shared expert); the released LLaDA2 configs set 1.
    #[serde(default)]
    pub num_shared_experts: usize,
    /// Width of the shared expert when it differs from moe_intermediate_size x num_shared_experts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe_shared_expert_intermediate_size: Option<usize>,
    #[serde(default = "one")]
    pub n_group: usize,
    #[serde(default = "one")]
    pub topk_group: usize,
    #[serde(default = "one_f")]
    pub routed_scaling_factor: f32,
    #[serde(default = "sigmoid")]
    pub score_function: String,
    #[serde(default = "one_f")]
    pub partial_rotary_factor: f32,
    /// Required, at the top level or (LLaDA2.2's layout) inside `rope_parameters`.
    #[serde(default = "nan")]
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
    pub vocab_size: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "yes")]
    pub use_qk_norm: bool,
    #[serde(default)]
    pub use_qkv_bias: bool,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub first_k_dense_replace: usize,
    #[serde(default)]
    pub mask_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// Where the checkpoint came from (`inclusionAI/LLaDA2.1-mini`); tells 2.1 from 2.0, whose
    /// configs have the same keys (see [`ModelConfig::family`]).
    #[serde(default, rename = "_name_or_path", skip_serializing_if = "Option::is_none")]
    pub name_or_path: Option<String>,
    /// LLaDA2.2's keys: block routing (`expert_capacity`, `block_size`; see
    /// [`ModelConfig::block_routing`]), RoPE settings in one object, and the delete / split edit
    /// tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_capacity: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_token_id: Option<u32>,
    /// Block FP8 routed experts (`"quant_method": "fp8"`, 128x128 blocks; see fp8.rs): the
    /// checkpoint stores them so, or `--quantization fp8` quantizes them at load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_config: Option<crate::fp8::QuantizationConfig>,
    /// Keys whose other values change the forward in ways dllm does not implement; read only to
    /// refuse such checkpoints clearly instead of computing something else.
    #[serde(default, skip_serializing)]
    pub hidden_act: Option<String>,
    #[serde(default, skip_serializing)]
    pub use_bias: Option<bool>,
    #[serde(default, skip_serializing)]
    pub norm_topk_prob: Option<bool>,
    #[serde(default, skip_serializing)]
    pub moe_router_enable_expert_bias: Option<bool>,
    #[serde(default, skip_serializing)]
    pub norm_head: Option<bool>,
    /// RoPE scaling (linear, dynamic, YaRN, ...): the releases carry null; anything but null or
    /// the default type would rotate positions differently from dllm's plain RoPE.
    #[serde(default, skip_serializing)]
    pub rope_scaling: Option<serde_json::Value>,
}

/// Whether a RoPE description (`rope_scaling`, or LLaDA2.2's `rope_parameters`) asks for more
/// than plain RoPE: a type other than "default" (transformers reads `rope_type`, older configs
/// `type`), or anything that is not an object.
fn scales_rope(r: &serde_json::Value) -> bool {
    match r.as_object() {
        Some(o) => o.get("rope_type").or_else(|| o.get("type")).is_some_and(|t| t.as_str() != Some("default")),
        None => true,
    }
}

fn one() -> usize {
    1
}
fn nan() -> f32 {
    f32::NAN
}

/// The LLaDA2 releases dllm knows: 2.0 and 2.1 share the architecture and the checkpoint
/// layout and differ in how they decode; 2.2 adds block routing, a 128K context and delete /
/// insert edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Family {
    #[value(name = "llada2.0")]
    Llada20,
    #[value(name = "llada2.1")]
    Llada21,
    #[value(name = "llada2.2")]
    Llada22,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Llada20 => "llada2.0",
            Family::Llada21 => "llada2.1",
            Family::Llada22 => "llada2.2",
        }
    }
    /// The decoding algorithm the family was trained for, by SGLang's `--dllm-algorithm` name
    /// (spelled here, as the config sits below decode/; tests/families.rs holds the two equal).
    pub fn default_algorithm(self) -> &'static str {
        match self {
            Family::Llada20 => "LowConfidence",
            Family::Llada21 => "JointThreshold",
            Family::Llada22 => "JointThresholdInDel",
        }
    }
    /// The release's name on the hub, as `_name_or_path` carries it (`LLaDA2.1-mini`).
    pub fn hub_name(self, size: &str) -> String {
        format!("inclusionAI/LLaDA{}-{size}", &self.name()["llada".len()..])
    }
}
fn one_f() -> f32 {
    1.0
}
fn yes() -> bool {
    true
}
fn sigmoid() -> String {
    "sigmoid".into()
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Io { path: p.clone(), cause })?;
        Self::from_json(&text).map_err(|e| match e {
            ConfigError::Json { cause, .. } => ConfigError::Json { path: p, cause },
            other => other,
        })
    }

    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        // Check model_type first so a wrong model says so instead of "missing field".
        let raw: serde_json::Value = serde_json::from_str(text).map_err(|cause| ConfigError::Json { path: "config.json".into(), cause })?;
        match raw.get("model_type").and_then(|v| v.as_str()) {
            Some("llada2_moe") => {}
            Some(other) => return Err(ConfigError::ModelType(other.to_string())),
            None => return Err(ConfigError::Invalid("missing field `model_type`".into())),
        }
        let mut cfg: ModelConfig = serde_json::from_value(raw).map_err(|cause| ConfigError::Json { path: "config.json".into(), cause })?;
        if cfg.rope_theta.is_nan() {
            // LLaDA2.2 keeps it in `rope_parameters` (transformers' newer layout).
            match cfg.rope_parameters.as_ref().and_then(|r| r.get("rope_theta")).and_then(|t| t.as_f64()) {
                Some(t) => cfg.rope_theta = t as f32,
                None => return Err(ConfigError::Invalid("missing field `rope_theta` (top level or in rope_parameters)".into())),
            }
        }
        if cfg.num_key_value_heads == 0 {
            cfg.num_key_value_heads = cfg.num_attention_heads; // HF convention: 0 means MHA
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Which release this checkpoint is: 2.2 by its own keys; 2.1 by `_name_or_path` (its
    /// config.json has 2.0's keys); 2.0 otherwise.
    pub fn family(&self) -> Family {
        let v22 = self.delete_token_id.is_some()
            || self.split_token_id.is_some()
            || self.expert_capacity.is_some()
            || self.rope_parameters.is_some();
        if v22 {
            Family::Llada22
        } else if self.name_or_path.as_deref().is_some_and(|n| n.to_ascii_lowercase().contains("llada2.1")) {
            Family::Llada21
        } else {
            Family::Llada20
        }
    }

    /// LLaDA2.2's block routing, when config.json has `expert_capacity` (validated at load: an
    /// integer in [num_experts_per_tok, num_experts], with `block_size` > 0 beside it).
    pub fn block_routing(&self) -> Option<BlockRouting> {
        let capacity = self.expert_capacity.as_ref().and_then(integer)?;
        Some(BlockRouting { capacity: capacity as usize, block: self.block_size? })
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
    /// Width of the rotated part of each head (neox half-rotation inside it).
    pub fn rotary_dim(&self) -> usize {
        (self.head_dim() as f32 * self.partial_rotary_factor) as usize
    }
    pub fn qkv_rows(&self) -> usize {
        (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim()
    }
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        layer >= self.first_k_dense_replace
    }
    /// Whether the routed experts are block FP8 (the checkpoint's, or `--quantization fp8`'s).
    pub fn fp8_experts(&self) -> bool {
        self.quantization_config.is_some()
    }
    /// This config with the routed experts quantized as `q` says (None: unchanged; a checkpoint
    /// that already holds FP8 experts stays FP8).
    pub fn quantized(mut self, q: Option<crate::fp8::Quantization>) -> Self {
        if q == Some(crate::fp8::Quantization::Fp8) {
            self.quantization_config = Some(crate::fp8::QuantizationConfig::fp8_blocks());
        }
        self
    }
    pub fn shared_intermediate(&self) -> usize {
        match self.moe_shared_expert_intermediate_size {
            Some(w) => w * self.num_shared_experts,
            None => self.moe_intermediate_size * self.num_shared_experts,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        // Widths are multiplied in pairs (a tensor's shape, qkv_rows) before any tensor is
        // compared with them: bounded here, no product overflows. The layer and expert counts
        // are checked against the tensors the checkpoint holds (Checkpoint::open), and the
        // context against the KV memory (the backends), so neither needs a bound here.
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim.unwrap_or(0)),
            ("intermediate_size", self.intermediate_size),
            ("moe_intermediate_size", self.moe_intermediate_size),
            ("moe_shared_expert_intermediate_size", self.moe_shared_expert_intermediate_size.unwrap_or(0)),
            ("num_shared_experts", self.num_shared_experts),
            ("num_experts_per_tok", self.num_experts_per_tok),
            ("n_group", self.n_group),
            ("topk_group", self.topk_group),
            ("vocab_size", self.vocab_size),
            ("first_k_dense_replace", self.first_k_dense_replace),
        ] {
            if v > MAX_WIDTH {
                return bad(format!("{name} = {v} exceeds the largest supported value ({MAX_WIDTH})"));
            }
        }
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("intermediate_size", self.intermediate_size),
            ("moe_intermediate_size", self.moe_intermediate_size),
            ("num_experts", self.num_experts),
            ("num_experts_per_tok", self.num_experts_per_tok),
            ("n_group", self.n_group),
            ("topk_group", self.topk_group),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(format!("{name} must be > 0"));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        let d = self.head_dim();
        if d == 0 || !d.is_multiple_of(2) {
            return bad(format!("head_dim must be even and > 0, got {d}"));
        }
        let r = self.rotary_dim();
        if !r.is_multiple_of(2) || r > d {
            return bad(format!("partial_rotary_factor {} gives an odd or oversized rotary dim {r}", self.partial_rotary_factor));
        }
        if !self.num_experts.is_multiple_of(self.n_group) {
            return bad(format!("num_experts ({}) must divide into n_group ({}) groups", self.num_experts, self.n_group));
        }
        if self.topk_group > self.n_group {
            return bad(format!("topk_group ({}) exceeds n_group ({})", self.topk_group, self.n_group));
        }
        if self.num_experts / self.n_group < 2 {
            return bad("each expert group needs at least 2 experts (group score = top-2 sum)".into());
        }
        if self.num_experts_per_tok > self.topk_group * (self.num_experts / self.n_group) {
            return bad(format!("num_experts_per_tok ({}) exceeds the experts in topk_group groups", self.num_experts_per_tok));
        }
        if let Some(v) = &self.expert_capacity {
            let Some(c) = integer(v) else {
                return bad(format!("expert_capacity must be a whole number of experts, got {v}"));
            };
            if c < self.num_experts_per_tok as u64 || c > self.num_experts as u64 {
                return bad(format!(
                    "expert_capacity ({c}) must be between num_experts_per_tok ({}) and num_experts ({})",
                    self.num_experts_per_tok, self.num_experts
                ));
            }
            match self.block_size {
                None | Some(0) => return bad("expert_capacity (block routing) needs block_size > 0 beside it".into()),
                Some(b) if b > MAX_WIDTH => return bad(format!("block_size = {b} exceeds the largest supported value ({MAX_WIDTH})")),
                Some(_) => {}
            }
            if self.n_group != 1 || self.topk_group != 1 {
                return bad("expert_capacity (block routing) with n_group / topk_group (group-limited routing) is not a known model".into());
            }
        }
        if self.score_function != "sigmoid" {
            return bad(format!("score_function {:?} is not supported (only sigmoid)", self.score_function));
        }
        if self.use_qkv_bias {
            return bad("use_qkv_bias=true is not supported".into());
        }
        let unsupported = [
            (self.hidden_act.as_deref().is_some_and(|a| a != "silu"), "hidden_act other than silu"),
            (self.use_bias == Some(true), "use_bias=true (linear-layer biases)"),
            (self.norm_topk_prob == Some(false), "norm_topk_prob=false"),
            (self.moe_router_enable_expert_bias == Some(false), "moe_router_enable_expert_bias=false"),
            (self.norm_head == Some(true), "norm_head=true"),
            (self.rope_scaling.as_ref().is_some_and(scales_rope), "rope_scaling (RoPE scaling)"),
            (self.rope_parameters.as_ref().is_some_and(scales_rope), "rope_parameters with a rope_type other than default"),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(bad, _)| *bad) {
            return bad(format!("{what} is not supported by dllm's LLaDA2 forward"));
        }
        if let Some(q) = &self.quantization_config {
            q.check().map_err(ConfigError::Invalid)?;
        }
        if !self.use_qk_norm {
            return bad("use_qk_norm=false is not supported".into());
        }
        if self.first_k_dense_replace > self.num_hidden_layers {
            return bad("first_k_dense_replace exceeds num_hidden_layers".into());
        }
        let positive = |x: f32| x > 0.0; // false for NaN
        if !positive(self.rms_norm_eps) || !positive(self.rope_theta) {
            return bad("rms_norm_eps and rope_theta must be > 0".into());
        }
        Ok(())
    }
}

/// LLaDA2.2's MoE routing: per routing block of `block` consecutive positions (from 0), the
/// `capacity` experts with the largest block score form the pool each token picks its top-k
/// from (docs/MODEL.md states every rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRouting {
    pub capacity: usize,
    pub block: usize,
}

/// A JSON number holding a whole non-negative value (48 or 48.0), else None.
fn integer(v: &serde_json::Value) -> Option<u64> {
    if let Some(u) = v.as_u64() {
        return Some(u);
    }
    let f = v.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0 && f <= MAX_WIDTH as f64).then_some(f as u64)
}

/// The largest width (hidden size, heads, head dim, MLP widths, vocabulary, ...) a config may
/// give: far above any released model, low enough that a product of two never overflows.
pub const MAX_WIDTH: usize = 1 << 24;

/// The shapes `make-model`, `bench` and `--random-weights` know by name: `tiny` is the test and
/// default model; `mini` and `flash` carry the released models' real shapes.
pub const PRESETS: &[&str] = &["tiny", "mini", "flash"];

pub fn preset(name: &str) -> Result<ModelConfig> {
    let base = |hidden, layers, heads, kv, head_dim, inter, moe_inter, vocab, dense| ModelConfig {
        model_type: "llada2_moe".into(),
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        head_dim: Some(head_dim),
        intermediate_size: inter,
        moe_intermediate_size: moe_inter,
        num_experts: 256,
        num_experts_per_tok: 8,
        num_shared_experts: 1,
        n_group: 8,
        topk_group: 4,
        routed_scaling_factor: 2.5,
        score_function: "sigmoid".into(),
        partial_rotary_factor: 0.5,
        rope_theta: 600000.0,
        rms_norm_eps: 1e-6,
        vocab_size: vocab,
        tie_word_embeddings: false,
        use_qk_norm: true,
        use_qkv_bias: false,
        max_position_embeddings: 32768,
        first_k_dense_replace: dense,
        mask_token_id: Some(156895),
        eos_token_id: Some(156892),
        torch_dtype: Some("bfloat16".into()),
        name_or_path: None,
        expert_capacity: None,
        block_size: None,
        rope_parameters: None,
        delete_token_id: None,
        split_token_id: None,
        quantization_config: None,
        moe_shared_expert_intermediate_size: None,
        hidden_act: None,
        use_bias: None,
        norm_topk_prob: None,
        moe_router_enable_expert_bias: None,
        norm_head: None,
        rope_scaling: None,
    };
    Ok(match name {
        "tiny" => ModelConfig {
            num_experts: 16,
            num_experts_per_tok: 4,
            n_group: 4,
            topk_group: 2,
            max_position_embeddings: 4096,
            mask_token_id: None,
            eos_token_id: None,
            ..base(64, 3, 4, 2, 16, 128, 32, 0, 1)
        },
        "mini" => base(2048, 20, 16, 4, 128, 5120, 512, 157184, 1),
        "flash" => base(4096, 32, 32, 4, 128, 9216, 1024, 157184, 1),
        other => bail!("unknown preset {other:?}; choose one of {PRESETS:?}"),
    })
}
