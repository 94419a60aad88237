//! Editing test checkpoints' tensors in place (a shard rewritten with some tensors replaced or
//! added), for the loader's checks and for layouts `make-model` does not write; and drawing a
//! checkpoint of a config `make-model` has no preset for.

use dllm::checkpoint::{expected_tensors, Checkpoint};
use dllm::config::ModelConfig;
use dllm::rng::Rng;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// Rewrite the shard holding `name` with that tensor replaced by (dtype, shape, bytes).
pub fn replace_tensor(d: &Path, name: &str, dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8>) {
    replace_tensors(d, name, vec![(name.to_string(), dtype, shape, bytes)]);
}

/// Rewrite the shard holding `holder` with each of `new` (name, dtype, shape, bytes) in it, in
/// place of any tensor of that name.
pub fn replace_tensors(d: &Path, holder: &str, new: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>) {
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "safetensors") {
            continue;
        }
        let raw = std::fs::read(&p).unwrap();
        let st = SafeTensors::deserialize(&raw).unwrap();
        if !st.names().contains(&holder) {
            continue;
        }
        let mut views: Vec<(String, TensorView)> = st.tensors().into_iter().filter(|(n, _)| new.iter().all(|t| &t.0 != n)).collect();
        for (name, dtype, shape, bytes) in &new {
            views.push((name.clone(), TensorView::new(*dtype, shape.clone(), bytes).unwrap()));
        }
        let out = safetensors::tensor::serialize(views, None).unwrap();
        std::fs::write(&p, out).unwrap();
        return;
    }
    panic!("{holder} is in no shard of {}", d.display());
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The shared expert's matrices of every MoE layer of `ck`: (name, [out, in]).
pub fn shared_expert_matrices(ck: &Checkpoint) -> Vec<(String, [usize; 2])> {
    use dllm::checkpoint::names::{layer, Proj};
    let c = &ck.config;
    (0..c.num_hidden_layers)
        .filter(|&l| c.is_moe_layer(l))
        .flat_map(|l| Proj::ALL.map(|p| layer(l).shared_expert(p)))
        .map(|n| {
            let s = ck.tensor(&n).unwrap().shape;
            (n, [s[0], s[1]])
        })
        .collect()
}

/// Store `d`'s shared experts as block fp8 (fp8.rs's quantization of their draws, with their
/// `_scale_inv`) or, `as_f32`, as those fp8 weights dequantized, in f32.
pub fn store_shared_expert_as_fp8(d: &Path, as_f32: bool) {
    // Every matrix read before the first shard is rewritten (which moves the tensors in it).
    let ck = Checkpoint::open(d).unwrap();
    let quantized: Vec<_> = shared_expert_matrices(&ck)
        .into_iter()
        .map(|(name, [out, inp])| {
            let q = dllm::fp8::quantize(&ck.f32(&name).unwrap(), out, inp).unwrap();
            (name, q)
        })
        .collect();
    for (name, q) in quantized {
        let shape = vec![q.out, q.inp];
        if as_f32 {
            replace_tensor(d, &name, Dtype::F32, shape, f32_bytes(&q.dequantize()));
        } else {
            let scale = (dllm::fp8::scale_name(&name), Dtype::F32, dllm::fp8::scale_shape(q.out, q.inp).to_vec(), f32_bytes(&q.scale_inv));
            replace_tensors(d, &name, vec![(name.clone(), Dtype::F8_E4M3, shape, q.codes), scale]);
        }
    }
}

/// `cfg`'s weights as one `model.safetensors` in `dir` (config.json is the caller's): every
/// tensor of `expected_tensors(cfg)` drawn N(mean, std) from `rng` by `rule(name, shape)` ->
/// (mean, std, stored as f32; else bf16).
pub fn write_drawn_weights(dir: &Path, cfg: &ModelConfig, rng: &mut Rng, rule: impl Fn(&str, &[usize]) -> (f64, f64, bool)) {
    let bufs: Vec<(String, Vec<usize>, Vec<u8>, bool)> = expected_tensors(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let (mean, std, f32_) = rule(&name, &shape);
            let n: usize = shape.iter().product();
            let mut b = Vec::with_capacity(n * if f32_ { 4 } else { 2 });
            for _ in 0..n {
                let x = (mean + std * rng.normal()) as f32;
                if f32_ {
                    b.extend_from_slice(&x.to_le_bytes());
                } else {
                    b.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes());
                }
            }
            (name, shape, b, f32_)
        })
        .collect();
    let views: Vec<(String, TensorView)> = bufs
        .iter()
        .map(|(n, s, b, f)| (n.clone(), TensorView::new(if *f { Dtype::F32 } else { Dtype::BF16 }, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}
