//! Safetensors checkpoints: single-file or sharded (`model.safetensors.index.json`), every
//! tensor checked for name, dtype and shape against the config before anything uses it.
//!
//! Tensor bytes are read with `pread` (`FileExt::read_exact_at`), not through a memory map: a
//! mapped file that shrinks (a shard truncated or rewritten while we load it) kills the process
//! with SIGBUS on the next touch of a vanished page, which safe Rust cannot turn into an error,
//! while a short `pread` is an ordinary `UnexpectedEof`. Every byte is copied once either way
//! (the map's page faults copy from the page cache too), and tensors are read in pieces that stay
//! in the CPU cache while they are widened or narrowed, so loading is no slower.

use crate::config::{ConfigError, ModelConfig};
use safetensors::tensor::Metadata;
use safetensors::Dtype;
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint directory {0} does not exist")]
    NoDir(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("{path} is not a valid safetensors file ({reason}); is it truncated or corrupt?")]
    Safetensors { path: String, reason: String },
    #[error("tensor {name} is missing from the checkpoint")]
    Missing { name: String },
    #[error("tensor {name} has shape {got:?}, expected {want:?} from config.json")]
    Shape { name: String, got: Vec<usize>, want: Vec<usize> },
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "tensor {name} has dtype {got:?}; supported: BF16, F16, F32 (and F8_E4M3 for the routed and shared experts of an fp8 checkpoint)"
    )]
    Dtype { name: String, got: String },
    /// A tensor whose dtype is one dllm reads, but not where it lies (fp8 outside the routed and
    /// shared experts, or bf16 routed experts in a checkpoint whose config.json says fp8).
    #[error("tensor {name} is {got:?}, expected {want:?} ({why})")]
    DtypeHere { name: String, got: DType, want: DType, why: &'static str },
    /// config.json names more layers or experts than the checkpoint's tensors hold.
    #[error("config.json {field} = {value} but the checkpoint holds {held} {what} ({missing} is missing)")]
    Count { field: &'static str, value: usize, held: usize, what: &'static str, missing: String },
    #[error("cannot allocate {bytes} bytes for tensor {name}")]
    OutOfMemory { name: String, bytes: usize },
}

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    BF16,
    F16,
    F32,
    /// float8 e4m3 (the routed experts of a block-FP8 checkpoint; see fp8.rs).
    F8E4M3,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::BF16 | DType::F16 => 2,
            DType::F32 => 4,
            DType::F8E4M3 => 1,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    shard: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Byte range in the shard file.
    start: u64,
    end: u64,
}

/// One stored tensor's dtype and shape (its bytes are read by [`Checkpoint::f32`] and
/// [`Checkpoint::bf16_bits`]).
#[derive(Debug, Clone, Copy)]
pub struct TensorInfo<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
}

impl TensorInfo<'_> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The part of a `[rows, cols]` tensor to read (1-D tensors are one row): a tensor-parallel
/// rank's shard (`backend::shard` gives the rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slice {
    Whole,
    /// These row ranges, concatenated in order.
    Rows(Vec<Range<usize>>),
    /// Every row's columns in this range.
    Cols(Range<usize>),
}

impl Slice {
    /// The shape of this slice of a tensor of `shape` (`[rows, cols]` or `[n]`); an error when it
    /// does not fit (a rule applied to a tensor of the wrong shape).
    pub fn shape(&self, name: &str, shape: &[usize]) -> Result<Vec<usize>, CheckpointError> {
        let (rows, cols) = match shape {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            _ => return Err(CheckpointError::Unsupported(format!("tensor {name} has shape {shape:?}; sharding expects 1-D or 2-D"))),
        };
        match self {
            Slice::Whole => Ok(shape.to_vec()),
            Slice::Rows(ranges) => {
                if shape.len() != 2 || ranges.iter().any(|r| r.end > rows || r.start > r.end) {
                    return Err(CheckpointError::Unsupported(format!("tensor {name} {shape:?}: row slice {ranges:?} is out of range")));
                }
                Ok(vec![ranges.iter().map(|r| r.len()).sum(), cols])
            }
            Slice::Cols(r) => {
                if shape.len() != 2 || r.end > cols || r.start > r.end {
                    return Err(CheckpointError::Unsupported(format!("tensor {name} {shape:?}: column slice {r:?} is out of range")));
                }
                Ok(vec![rows, r.len()])
            }
        }
    }
}

/// The slice of an fp8 matrix's block scales that a `slice` of its codes lies in
/// ([`Checkpoint::fp8_slice`]): along the cut dimension, each range must start on a block
/// boundary and, where another range follows, end on one; the last (or only) range may instead
/// lie wholly inside one block. Else one of the rank's blocks would need two scales: an error
/// that says what to do instead.
pub fn fp8_scale_slice(name: &str, slice: &Slice) -> Result<Slice, CheckpointError> {
    use crate::fp8::BLOCK;
    let blocks = |r: &Range<usize>, last: bool| -> Result<Range<usize>, CheckpointError> {
        let inside_one = r.start / BLOCK == (r.end.max(r.start + 1) - 1) / BLOCK;
        if r.start.is_multiple_of(BLOCK) && (last || r.len().is_multiple_of(BLOCK)) {
            Ok(r.start / BLOCK..r.end.div_ceil(BLOCK))
        } else if inside_one && last {
            Ok(r.start / BLOCK..r.start / BLOCK + 1)
        } else {
            Err(CheckpointError::Unsupported(format!(
                "tensor {name}: this rank's slice {}..{} cuts the fp8 checkpoint's {BLOCK}-wide scale blocks, so its own blocks \
                 would need two scales; load the bf16 checkpoint with --quantization fp8, or choose a --tp-size whose slices \
                 are whole blocks",
                r.start, r.end
            )))
        }
    };
    Ok(match slice {
        Slice::Whole => Slice::Whole,
        Slice::Rows(ranges) => {
            Slice::Rows(ranges.iter().enumerate().map(|(i, r)| blocks(r, i + 1 == ranges.len())).collect::<Result<_, _>>()?)
        }
        Slice::Cols(c) => Slice::Cols(blocks(c, true)?),
    })
}

/// Bytes read per `pread`: big enough that the syscalls cost nothing, small enough to stay in
/// the CPU cache while they are converted.
const READ_PIECE: usize = 1 << 20;

pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: ModelConfig,
    shards: Vec<File>,
    shard_names: Vec<String>,
    tensors: HashMap<String, Entry>,
}

/// Every tensor name of the LLaDA2 layout, spelled once: the checker ([`expected_tensors`]),
/// both loaders and the random initialisers build names only through here.
pub mod names {
    pub const EMBED: &str = "model.word_embeddings.weight";
    pub const FINAL_NORM: &str = "model.norm.weight";
    pub const LM_HEAD: &str = "lm_head.weight";

    /// The three matrices of a gated MLP (dense layers, each expert, the shared expert).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Proj {
        Gate,
        Up,
        Down,
    }

    impl Proj {
        pub const ALL: [Proj; 3] = [Proj::Gate, Proj::Up, Proj::Down];
        pub fn stem(self) -> &'static str {
            match self {
                Proj::Gate => "gate_proj",
                Proj::Up => "up_proj",
                Proj::Down => "down_proj",
            }
        }
    }

    /// The names of decoder layer `i` (`model.layers.{i}.`...).
    pub struct Layer(String);

    pub fn layer(i: usize) -> Layer {
        Layer(format!("model.layers.{i}"))
    }

    impl Layer {
        pub fn input_norm(&self) -> String {
            format!("{}.input_layernorm.weight", self.0)
        }
        pub fn post_norm(&self) -> String {
            format!("{}.post_attention_layernorm.weight", self.0)
        }
        pub fn qkv(&self) -> String {
            format!("{}.attention.query_key_value.weight", self.0)
        }
        /// The attention output projection.
        pub fn dense(&self) -> String {
            format!("{}.attention.dense.weight", self.0)
        }
        pub fn q_norm(&self) -> String {
            format!("{}.attention.query_layernorm.weight", self.0)
        }
        pub fn k_norm(&self) -> String {
            format!("{}.attention.key_layernorm.weight", self.0)
        }
        pub fn router(&self) -> String {
            format!("{}.mlp.gate.weight", self.0)
        }
        pub fn expert_bias(&self) -> String {
            format!("{}.mlp.gate.expert_bias", self.0)
        }
        /// Routed expert `x`.
        pub fn expert(&self, x: usize, p: Proj) -> String {
            format!("{}.mlp.experts.{x}.{}.weight", self.0, p.stem())
        }
        /// The block scales of routed expert `x`'s matrix (block-FP8 checkpoints).
        pub fn expert_scale(&self, x: usize, p: Proj) -> String {
            crate::fp8::scale_name(&self.expert(x, p))
        }
        pub fn shared_expert(&self, p: Proj) -> String {
            format!("{}.mlp.shared_experts.{}.weight", self.0, p.stem())
        }
        /// A dense (non-MoE) layer's MLP.
        pub fn mlp(&self, p: Proj) -> String {
            format!("{}.mlp.{}.weight", self.0, p.stem())
        }
    }
}

/// Every tensor the forward needs, with its shape, in load order.
pub fn expected_tensors(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    use names::Proj;
    let (h, d, v) = (c.hidden_size, c.head_dim(), c.vocab_size);
    // [out, in] of a gated MLP's matrices for an intermediate width `w`.
    let mlp_shape = |p: Proj, w: usize| if p == Proj::Down { vec![h, w] } else { vec![w, h] };
    let mut t = vec![(names::EMBED.to_string(), vec![v, h])];
    for i in 0..c.num_hidden_layers {
        let l = names::layer(i);
        t.push((l.input_norm(), vec![h]));
        t.push((l.post_norm(), vec![h]));
        t.push((l.qkv(), vec![c.qkv_rows(), h]));
        t.push((l.dense(), vec![h, c.num_attention_heads * d]));
        t.push((l.q_norm(), vec![d]));
        t.push((l.k_norm(), vec![d]));
        if c.is_moe_layer(i) {
            let (e, m, s) = (c.num_experts, c.moe_intermediate_size, c.shared_intermediate());
            t.push((l.router(), vec![e, h]));
            t.push((l.expert_bias(), vec![e]));
            for x in 0..e {
                for p in Proj::ALL {
                    let shape = mlp_shape(p, m);
                    let scale = crate::fp8::scale_shape(shape[0], shape[1]).to_vec();
                    t.push((l.expert(x, p), shape));
                    // After its weight: make-model draws the weight and writes the scales it got.
                    if c.fp8_experts() {
                        t.push((l.expert_scale(x, p), scale));
                    }
                }
            }
            if c.num_shared_experts > 0 {
                t.extend(Proj::ALL.map(|p| (l.shared_expert(p), mlp_shape(p, s))));
            }
        } else {
            t.extend(Proj::ALL.map(|p| (l.mlp(p), mlp_shape(p, c.intermediate_size))));
        }
    }
    t.push((names::FINAL_NORM.to_string(), vec![h]));
    if !c.tie_word_embeddings {
        t.push((names::LM_HEAD.to_string(), vec![v, h]));
    }
    t
}

/// The dtype a tensor of [`expected_tensors`] must be stored in, where one is required: the
/// routed experts' weights of a block-FP8 config are F8E4M3 and their scales F32; elsewhere
/// None (BF16, F16 or F32, widened or narrowed on load; the shared expert's may also be F8E4M3
/// under such a config, see [`may_be_fp8`]).
pub fn required_dtype(c: &ModelConfig, name: &str) -> Option<DType> {
    if !c.fp8_experts() || !name.contains(".mlp.experts.") {
        None
    } else if name.ends_with("_scale_inv") {
        Some(DType::F32)
    } else {
        Some(DType::F8E4M3)
    }
}

/// Whether tensor `name` may be stored as block FP8 though [`required_dtype`] asks for none: the
/// shared expert's matrices of a block-FP8 config (DeepSeek-V3's layout quantizes them with the
/// routed experts'; a checkpoint may hold them either way). They are dequantized at load and
/// run as the bf16 shared expert does (docs/MODEL.md).
pub fn may_be_fp8(c: &ModelConfig, name: &str) -> bool {
    c.fp8_experts() && name.contains(".mlp.shared_experts.") && name.ends_with(".weight")
}

/// How a random checkpoint draws a tensor: `make-model` on the host and the CUDA backend's
/// random device weights share this rule, so a random-weight benchmark sees a made checkpoint's
/// statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomInit {
    pub mean: f64,
    pub std: f64,
    /// Stored as f32 (the released checkpoints' expert bias), else bf16.
    pub f32: bool,
}

/// The rule for tensor `name` of shape `[.., fan_in]` (its input width is the last dimension).
pub fn random_init(name: &str, shape: &[usize], c: &ModelConfig) -> RandomInit {
    let fan_in = *shape.last().unwrap_or(&1) as f64;
    let (mean, std, f32) = if name.ends_with("layernorm.weight") || name == names::FINAL_NORM {
        (1.0, 0.1, false)
    } else if name.ends_with("expert_bias") {
        (0.0, 0.1, true) // f32 in the released checkpoints
    } else if name == names::EMBED {
        (0.0, 1.0, false)
    } else if name == names::LM_HEAD {
        // Peaked enough that some positions pass a 0.95 threshold, so both unmask branches run.
        (0.0, 5.0 / (c.hidden_size as f64).sqrt(), false)
    } else if name.ends_with("mlp.gate.weight") {
        (0.0, 2.0 / fan_in.sqrt(), false)
    } else {
        (0.0, 1.0 / fan_in.sqrt(), false)
    };
    RandomInit { mean, std, f32 }
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::File { path: path.display().to_string(), msg: msg.to_string() }
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        if !dir.is_dir() {
            return Err(CheckpointError::NoDir(dir.display().to_string()));
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let shard_names = shard_files(dir)?;
        let mut shards = Vec::new();
        let mut tensors = HashMap::new();
        for (si, name) in shard_names.iter().enumerate() {
            let path = dir.join(name);
            let file = File::open(&path).map_err(|e| file_err(&path, e))?;
            let (base, meta) = read_header(&file, &path)?;
            for (tname, info) in meta.tensors() {
                let dtype = match info.dtype {
                    Dtype::BF16 => DType::BF16,
                    Dtype::F16 => DType::F16,
                    Dtype::F32 => DType::F32,
                    Dtype::F8_E4M3 => DType::F8E4M3,
                    other => {
                        return Err(CheckpointError::Dtype { name: tname, got: format!("{other:?}") });
                    }
                };
                let e = Entry {
                    shard: si,
                    dtype,
                    shape: info.shape.clone(),
                    start: base + info.data_offsets.0 as u64,
                    end: base + info.data_offsets.1 as u64,
                };
                if tensors.insert(tname.clone(), e).is_some() {
                    return Err(file_err(&path, format!("tensor {tname} appears in more than one shard")));
                }
            }
            shards.push(file);
        }
        // Biases would change the forward; refuse them rather than silently drop them.
        if let Some(name) = tensors.keys().filter(|n| n.starts_with("model.layers.") && n.ends_with(".bias")).min() {
            return Err(CheckpointError::Unsupported(format!(
                "tensor {name}: linear-layer biases are not supported by dllm's LLaDA2 forward"
            )));
        }
        check_counts(&config, &tensors)?;
        let ck = Checkpoint { dir: dir.to_path_buf(), config, shards, shard_names, tensors };
        for (name, want) in expected_tensors(&ck.config) {
            let e = ck.tensors.get(&name).ok_or_else(|| CheckpointError::Missing { name: name.clone() })?;
            if e.shape != want {
                return Err(CheckpointError::Shape { name, got: e.shape.clone(), want });
            }
            match required_dtype(&ck.config, &name) {
                Some(want) if e.dtype != want => {
                    let why = "config.json's quantization_config says the routed experts are block fp8";
                    return Err(CheckpointError::DtypeHere { name, got: e.dtype, want, why });
                }
                None if e.dtype == DType::F8E4M3 && may_be_fp8(&ck.config, &name) => {
                    ck.fp8_scale_of(&name, &want)?;
                }
                None if e.dtype == DType::F8E4M3 => {
                    let why = "only the routed and shared experts of a checkpoint whose config.json has an fp8 quantization_config \
                               may be fp8";
                    return Err(CheckpointError::DtypeHere { name, got: e.dtype, want: DType::BF16, why });
                }
                _ => {}
            }
        }
        Ok(ck)
    }

    /// The name of the block scales beside an fp8 matrix `name` of shape `shape`, checked:
    /// present, F32, `[ceil(out/128), ceil(in/128)]`. At open for the fp8 tensors that
    /// [`expected_tensors`] lists no scales for (a shared expert's), and before every fp8 read.
    fn fp8_scale_of(&self, name: &str, shape: &[usize]) -> Result<String, CheckpointError> {
        let scale = crate::fp8::scale_name(name);
        let &[out, inp] = shape else {
            return Err(CheckpointError::Unsupported(format!("tensor {name}: an fp8 tensor must be a matrix, not {shape:?}")));
        };
        let e = self.tensors.get(&scale).ok_or_else(|| CheckpointError::Missing { name: scale.clone() })?;
        let want = crate::fp8::scale_shape(out, inp).to_vec();
        if e.shape != want {
            return Err(CheckpointError::Shape { name: scale, got: e.shape.clone(), want });
        }
        if e.dtype != DType::F32 {
            let why = "an fp8 matrix's block scales are f32";
            return Err(CheckpointError::DtypeHere { name: scale, got: e.dtype, want: DType::F32, why });
        }
        Ok(scale)
    }

    pub fn shard_names(&self) -> &[String] {
        &self.shard_names
    }

    fn entry(&self, name: &str) -> Result<&Entry, CheckpointError> {
        self.tensors.get(name).ok_or_else(|| CheckpointError::Missing { name: name.to_string() })
    }

    pub fn tensor(&self, name: &str) -> Result<TensorInfo<'_>, CheckpointError> {
        let e = self.entry(name)?;
        Ok(TensorInfo { dtype: e.dtype, shape: &e.shape })
    }

    /// Bytes `at..at + buf.len()` of tensor `name`'s shard. A shard that has shrunk since it was
    /// opened is an error naming the file.
    fn read_at(&self, name: &str, e: &Entry, buf: &mut [u8], at: u64) -> Result<(), CheckpointError> {
        let file = &self.shards[e.shard];
        file.read_exact_at(buf, at).map_err(|err| {
            let path = self.dir.join(&self.shard_names[e.shard]);
            let msg = match file.metadata() {
                Ok(m) if m.len() < e.end => format!(
                    "tensor {name} lies at bytes {}..{} but the file now has {} bytes: it was truncated after it was opened",
                    e.start,
                    e.end,
                    m.len()
                ),
                _ => format!("reading tensor {name}: {err}"),
            };
            file_err(&path, msg)
        })
    }

    /// The bytes of `slice` of the tensor, in pieces of whole elements, in order. Row ranges are
    /// read as they lie; a column slice reads whole rows a piece at a time and keeps its columns
    /// (a tensor-parallel rank's half of a row is a few KiB: every page holds both halves).
    fn read_slice(&self, name: &str, slice: &Slice, mut f: impl FnMut(&[u8])) -> Result<(), CheckpointError> {
        let e = self.entry(name)?;
        slice.shape(name, &e.shape)?;
        let es = e.dtype.size();
        let cols = *e.shape.last().unwrap_or(&1);
        let row_bytes = (cols * es) as u64;
        let mut buf = vec![0u8; READ_PIECE.min((e.end - e.start) as usize).max(row_bytes as usize)];
        let mut read_span = |from: u64, to: u64, f: &mut dyn FnMut(&[u8])| -> Result<(), CheckpointError> {
            let mut at = from;
            while at < to {
                let n = buf.len().min((to - at) as usize);
                self.read_at(name, e, &mut buf[..n], at)?;
                f(&buf[..n]);
                at += n as u64;
            }
            Ok(())
        };
        match slice {
            Slice::Whole => read_span(e.start, e.end, &mut f),
            Slice::Rows(ranges) => {
                for r in ranges {
                    read_span(e.start + r.start as u64 * row_bytes, e.start + r.end as u64 * row_bytes, &mut f)?;
                }
                Ok(())
            }
            Slice::Cols(c) => {
                let (lo, hi) = (c.start * es, c.end * es);
                let rows_per_read = (READ_PIECE as u64 / row_bytes).max(1);
                let rows = (e.end - e.start) / row_bytes;
                let mut r0 = 0;
                while r0 < rows {
                    let r1 = (r0 + rows_per_read).min(rows);
                    let span = ((r1 - r0) * row_bytes) as usize;
                    self.read_at(name, e, &mut buf[..span], e.start + r0 * row_bytes)?;
                    for row in buf[..span].chunks_exact(row_bytes as usize) {
                        f(&row[lo..hi]);
                    }
                    r0 = r1;
                }
                Ok(())
            }
        }
    }

    /// Widened to f32 (bf16/f16 are exact in f32); an fp8 weight dequantized with its block
    /// scales (exact: e4m3 times an f32 scale, as the fp8 GEMM computes it).
    pub fn f32(&self, name: &str) -> Result<Vec<f32>, CheckpointError> {
        self.f32_slice(name, &Slice::Whole)
    }

    /// A tensor-parallel rank's `slice` of the tensor, widened to f32.
    pub fn f32_slice(&self, name: &str, slice: &Slice) -> Result<Vec<f32>, CheckpointError> {
        let e = self.entry(name)?;
        if e.dtype == DType::F8E4M3 {
            // The rank's codes and scales as a GPU rank uploads them (backend/cuda/fp8.rs),
            // dequantized: the CPU twin of the sharded forward reads what a GPU rank reads and
            // refuses the slices it refuses.
            return Ok(self.fp8_slice(name, slice)?.dequantize());
        }
        let n = self.slice_numel(name, slice)?;
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| CheckpointError::OutOfMemory { name: name.to_string(), bytes: n * 4 })?;
        // One loop per dtype, so that each converts without a branch per element.
        match e.dtype {
            DType::BF16 => {
                self.read_slice(name, slice, |b| out.extend(b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())))?
            }
            DType::F16 => {
                self.read_slice(name, slice, |b| out.extend(b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())))?
            }
            DType::F32 => {
                self.read_slice(name, slice, |b| out.extend(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))))?
            }
            DType::F8E4M3 => unreachable!("dequantized above"),
        }
        Ok(out)
    }

    /// An fp8 matrix `[out, in]` and its block scales (`<name>_scale_inv`), as stored.
    pub fn fp8(&self, name: &str) -> Result<crate::fp8::Fp8Matrix, CheckpointError> {
        self.fp8_slice(name, &Slice::Whole)
    }

    /// A tensor-parallel rank's `slice` of an fp8 matrix: its codes, and the scales of the
    /// 128 x 128 blocks they lie in (the rank's own blocks, each one of the matrix's), as
    /// [`fp8_scale_slice`] allows (mini's experts split 2, 4 or 8 ways, flash's 2 or 4, are).
    pub fn fp8_slice(&self, name: &str, slice: &Slice) -> Result<crate::fp8::Fp8Matrix, CheckpointError> {
        let e = self.entry(name)?;
        let scale = self.fp8_scale_of(name, &e.shape)?;
        let shape = slice.shape(name, &e.shape)?;
        let scale_slice = fp8_scale_slice(name, slice)?;
        let n = shape.iter().product::<usize>();
        let mut codes = Vec::new();
        codes.try_reserve_exact(n).map_err(|_| CheckpointError::OutOfMemory { name: name.to_string(), bytes: n })?;
        self.read_slice(name, slice, |b| codes.extend_from_slice(b))?;
        let scales = self.f32_slice(&scale, &scale_slice)?;
        crate::fp8::Fp8Matrix::new(shape[0], shape[1], codes, scales)
            .map_err(|err| CheckpointError::Unsupported(format!("tensor {name}: {err}")))
    }

    /// Narrowed to bf16 bits (what the GPU backend uploads).
    pub fn bf16_bits(&self, name: &str) -> Result<Vec<u16>, CheckpointError> {
        self.bf16_bits_slice(name, &Slice::Whole)
    }

    /// A tensor-parallel rank's `slice` of the tensor as bf16 bits.
    pub fn bf16_bits_slice(&self, name: &str, slice: &Slice) -> Result<Vec<u16>, CheckpointError> {
        let e = self.entry(name)?;
        if e.dtype != DType::BF16 {
            return Ok(self.f32_slice(name, slice)?.into_iter().map(|x| half::bf16::from_f32(x).to_bits()).collect());
        }
        let n = self.slice_numel(name, slice)?;
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| CheckpointError::OutOfMemory { name: name.to_string(), bytes: n * 2 })?;
        self.read_slice(name, slice, |b| out.extend(b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]))))?;
        Ok(out)
    }

    /// Elements in `slice` of tensor `name`.
    pub fn slice_numel(&self, name: &str, slice: &Slice) -> Result<usize, CheckpointError> {
        let e = self.entry(name)?;
        let shape = slice.shape(name, &e.shape)?;
        Ok(shape.iter().product())
    }

    /// Bytes of the stored tensor `name` (0 if absent).
    pub fn tensor_bytes(&self, name: &str) -> u64 {
        self.tensors.get(name).map_or(0, |e| e.end - e.start)
    }

    /// Total bytes of the tensors the forward reads.
    pub fn weight_bytes(&self) -> u64 {
        expected_tensors(&self.config).iter().map(|(n, _)| self.tensor_bytes(n)).sum()
    }
}

/// The layer and expert counts config.json gives, against the tensors present: checked before
/// the expected tensor list is built, whose length they multiply (a config naming 10^9 layers or
/// experts would otherwise build billions of names before the first one is found missing).
fn check_counts(c: &ModelConfig, tensors: &HashMap<String, Entry>) -> Result<(), CheckpointError> {
    // One past the largest index found after `prefix` in a tensor name (0 if none).
    let held = |prefix: &str| -> usize {
        tensors
            .keys()
            .filter_map(|n| n.strip_prefix(prefix)?.split('.').next()?.parse::<usize>().ok())
            .map(|i| i.saturating_add(1))
            .max()
            .unwrap_or(0)
    };
    let layers = held("model.layers.");
    if c.num_hidden_layers > layers {
        let missing = format!("model.layers.{layers}");
        return Err(CheckpointError::Count {
            field: "num_hidden_layers",
            value: c.num_hidden_layers,
            held: layers,
            what: "layers",
            missing,
        });
    }
    if c.first_k_dense_replace < c.num_hidden_layers {
        let first_moe = c.first_k_dense_replace;
        let experts = held(&format!("model.layers.{first_moe}.mlp.experts."));
        if c.num_experts > experts {
            let missing = format!("model.layers.{first_moe}.mlp.experts.{experts}");
            let what = "experts in its first MoE layer";
            return Err(CheckpointError::Count { field: "num_experts", value: c.num_experts, held: experts, what, missing });
        }
    }
    Ok(())
}

/// A shard's header, checked against the file's length before anything is read past it:
/// returns where the data starts and the tensors' entries.
fn read_header(file: &File, path: &Path) -> Result<(u64, Metadata), CheckpointError> {
    let invalid = |reason: String| CheckpointError::Safetensors { path: path.display().to_string(), reason };
    let len = file.metadata().map_err(|e| file_err(path, e))?.len();
    let mut n = [0u8; 8];
    file.read_exact_at(&mut n, 0).map_err(|_| invalid(format!("{len} bytes, shorter than the 8-byte header length")))?;
    let n = u64::from_le_bytes(n);
    // The reference reader's bound on a header; also keeps a corrupt length from sizing a buffer.
    const MAX_HEADER: u64 = 100_000_000;
    if n > MAX_HEADER || 8 + n > len {
        return Err(invalid(format!("header length {n} does not fit in the file's {len} bytes")));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact_at(&mut header, 8).map_err(|e| file_err(path, e))?;
    let meta: Metadata = serde_json::from_slice(&header).map_err(|e| invalid(e.to_string()))?;
    let want = 8 + n + meta.data_len() as u64;
    if want != len {
        return Err(invalid(format!("its header describes {want} bytes but the file has {len}")));
    }
    Ok((8 + n, meta))
}

/// The shard files of a checkpoint: from the index when there is one, else model.safetensors.
fn shard_files(dir: &Path) -> Result<Vec<String>, CheckpointError> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| file_err(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| file_err(&index, format!("invalid JSON: {e}")))?;
        let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| file_err(&index, "has no \"weight_map\" object"))?;
        let mut files: Vec<String> = Vec::new();
        for (t, f) in map {
            let f = f.as_str().ok_or_else(|| file_err(&index, format!("weight_map[{t}] is not a file name")))?;
            if f.contains('/') || f.contains("..") {
                return Err(file_err(&index, format!("shard name {f:?} must be a plain file name")));
            }
            if !files.iter().any(|x| x == f) {
                files.push(f.to_string());
            }
        }
        files.sort();
        for f in &files {
            if !dir.join(f).exists() {
                return Err(file_err(&dir.join(f), "shard named in the index is missing"));
            }
        }
        return Ok(files);
    }
    if dir.join("model.safetensors").exists() {
        return Ok(vec!["model.safetensors".into()]);
    }
    Err(file_err(dir, "no model.safetensors or model.safetensors.index.json"))
}
