//! Block-FP8 experts on the CPU (CI): `make-model --quantization fp8` checkpoints, the loader's
//! checks of their dtypes and scale shapes, `--quantization fp8` over a bf16 checkpoint giving
//! the very weights of the fp8 checkpoint, and the accuracy cost of fp8 on the tiny model.

use common::checkpoints::{f32_bytes, replace_tensor, replace_tensors, shared_expert_matrices, store_shared_expert_as_fp8};
use dllm::backend::cpu::CpuBackend;
use dllm::checkpoint::{Checkpoint, DType};
use dllm::fp8::Quantization;
use dllm::make_model::make_model_quantized;
use dllm::rng::Rng;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

mod common;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dllm-fp8-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn tiny(tag: &str, q: Option<Quantization>) -> PathBuf {
    let d = dir(tag);
    make_model_quantized("tiny", &d, 0, q).unwrap();
    d
}

fn open_err(d: &Path) -> String {
    match Checkpoint::open(d) {
        Ok(_) => panic!("expected an error for {}", d.display()),
        Err(e) => e.to_string(),
    }
}

const GATE0: &str = "model.layers.1.mlp.experts.0.gate_proj.weight";

#[test]
fn fp8_checkpoint_stores_codes_and_scales_and_says_so() {
    let (b, f) = (tiny("layout-bf16", None), tiny("layout-fp8", Some(Quantization::Fp8)));
    let (cb, cf) = (Checkpoint::open(&b).unwrap(), Checkpoint::open(&f).unwrap());
    assert!(!cb.config.fp8_experts() && cf.config.fp8_experts());
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["quantization_config"],
        serde_json::json!({"quant_method": "fp8", "weight_block_size": [128, 128], "activation_scheme": "dynamic"})
    );
    let w = cf.tensor(GATE0).unwrap();
    assert_eq!((w.dtype, w.shape), (DType::F8E4M3, &[32usize, 64][..]));
    let s = cf.tensor(&dllm::fp8::scale_name(GATE0)).unwrap();
    assert_eq!((s.dtype, s.shape), (DType::F32, &[1usize, 1][..]));
    // The shared expert, attention, router and embeddings stay bf16.
    for n in ["model.layers.1.mlp.shared_experts.gate_proj.weight", "model.layers.1.mlp.gate.weight", "model.word_embeddings.weight"] {
        assert_eq!(cf.tensor(n).unwrap().dtype, DType::BF16, "{n}");
    }
    // The same draws, quantized: the stored codes and scales are fp8.rs's quantization of the
    // bf16 checkpoint's tensor, bit for bit.
    let (c, r) = (cf.config.moe_intermediate_size, cf.config.hidden_size);
    let want = dllm::fp8::quantize(&cb.f32(GATE0).unwrap(), c, r).unwrap();
    assert_eq!(cf.fp8(GATE0).unwrap(), want);
    // ~half the bytes of the experts: the fp8 checkpoint is clearly smaller.
    let size = |d: &Path| std::fs::read_dir(d).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum::<u64>();
    assert!(size(&f) < size(&b) * 9 / 10, "{} vs {}", size(&f), size(&b));
}

#[test]
fn quantizing_at_load_gives_the_fp8_checkpoints_weights() {
    let (b, f) = (tiny("same-bf16", None), tiny("same-fp8", Some(Quantization::Fp8)));
    let (cb, cf) = (Checkpoint::open(&b).unwrap(), Checkpoint::open(&f).unwrap());
    let mut from_bf16 = CpuBackend::load_quantized(&cb, Some(Quantization::Fp8)).unwrap();
    let mut stored = CpuBackend::load(&cf).unwrap();
    assert!(from_bf16.cfg.fp8_experts() && stored.cfg.fp8_experts());
    let tokens: Vec<u32> = (0..24).map(|i| (i * 37 % 280) as u32).collect();
    let la = logits(&mut from_bf16, &tokens);
    let lb = logits(&mut stored, &tokens);
    assert!(la == lb, "--quantization fp8 over bf16 and the stored fp8 checkpoint must compute the same logits");
}

fn logits(b: &mut CpuBackend, tokens: &[u32]) -> Vec<f32> {
    let (cfg, rows) = (b.cfg.clone(), (0..tokens.len()).collect::<Vec<_>>());
    common::sequence_logits(b, &cfg, tokens, 8, &rows)
}

/// fp8 vs bf16 logits on random prompts of tiny's vocabulary: (relative error over all rows,
/// the median row's relative error).
fn fp8_logits_error(d: &Path, seed: u64) -> (f64, f64) {
    let ck = Checkpoint::open(d).unwrap();
    let mut bf16 = CpuBackend::load(&ck).unwrap();
    let mut fp8 = CpuBackend::load_quantized(&ck, Some(Quantization::Fp8)).unwrap();
    let mut rng = Rng::new(seed);
    let v = ck.config.vocab_size;
    let (mut num, mut den, mut rows) = (0f64, 0f64, vec![]);
    for len in [8usize, 40] {
        let tokens: Vec<u32> = (0..len).map(|_| (rng.next_u64() % v as u64) as u32).collect();
        let (a, q) = (logits(&mut bf16, &tokens), logits(&mut fp8, &tokens));
        for (ra, rq) in a.chunks(v).zip(q.chunks(v)) {
            let n: f64 = ra.iter().zip(rq).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
            let dd: f64 = ra.iter().map(|x| (*x as f64).powi(2)).sum();
            rows.push((n / dd).sqrt());
            (num, den) = (num + n, den + dd);
        }
    }
    rows.sort_by(f64::total_cmp);
    ((num / den).sqrt(), rows[rows.len() / 2])
}

/// The accuracy cost of fp8 experts on the tiny model. e4m3 keeps 3 mantissa bits (a weight
/// moves by up to 1/16 of itself, ~2.5% rms), and the experts are one term of the residual
/// stream, so with every expert chosen (continuous routing) the logits move by a percent or
/// two. With tiny's top-4-of-16 routing, a moved router input flips a near-tied expert now and
/// then, which moves that token a lot (as bf16 rounding does between the CPU and the GPU; see
/// tests/cuda_kernels.rs), so there the bound is on the median row. A quantizer that lost the
/// scales or the signs would move the logits by O(1).
#[test]
fn fp8_vs_bf16_logits_relative_error_on_tiny() {
    let d = tiny("acc-bf16", None);
    let (all, median) = fp8_logits_error(&d, 5);
    eprintln!("tiny (top-4 routing): fp8 vs bf16 logits relative error {all:.4} over all rows, median row {median:.4}");
    assert!(all > 0.0, "fp8 experts changed nothing: were they quantized?");
    assert!(median < 0.06 && all < 0.2, "top-k routing: {all} overall, {median} median row");
    // Every expert chosen: the forward is continuous in the weights.
    let path = d.join("config.json");
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    c["num_experts_per_tok"] = c["num_experts"].clone();
    c["topk_group"] = c["n_group"].clone();
    std::fs::write(&path, c.to_string()).unwrap();
    let (all, median) = fp8_logits_error(&d, 6);
    eprintln!("tiny (every expert chosen): fp8 vs bf16 logits relative error {all:.4} over all rows, median row {median:.4}");
    assert!(all > 0.0 && all < 0.03, "dense routing: {all}");
}

#[test]
fn generate_with_quantization_runs_on_the_cpu() {
    let b = tiny("gen-bf16", None);
    let f = tiny("gen-fp8", Some(Quantization::Fp8));
    let opts =
        dllm::runtime::LoadOptions { quantization: Some(Quantization::Fp8), ..dllm::runtime::LoadOptions::on(dllm::runtime::Device::Cpu) };
    let params = dllm::engine::GenParams { max_new_tokens: 16, block_size: 8, ..Default::default() };
    let mut m = dllm::runtime::load_with(&b, &opts).unwrap();
    let prompt = m.tokenizer.encode("the cat").unwrap();
    let quantized = m.engine.generate(prompt.clone(), params.clone()).unwrap();
    let mut s = dllm::runtime::load(&f, dllm::runtime::Device::Cpu).unwrap();
    let stored = s.engine.generate(prompt, params).unwrap();
    assert_eq!(quantized.output_ids, stored.output_ids);
    assert_eq!(quantized.output_ids.len(), 16);
}

#[test]
fn a_scale_of_the_wrong_shape_is_a_clear_error() {
    let f = tiny("bad-scale", Some(Quantization::Fp8));
    let name = dllm::fp8::scale_name(GATE0);
    replace_tensor(&f, &name, Dtype::F32, vec![1, 2], [1f32, 1.0].iter().flat_map(|x| x.to_le_bytes()).collect());
    let e = open_err(&f);
    assert!(e.contains(&name) && e.contains("[1, 2]") && e.contains("[1, 1]"), "{e}");
}

#[test]
fn a_missing_scale_is_a_clear_error() {
    let f = tiny("no-scale", Some(Quantization::Fp8));
    let name = dllm::fp8::scale_name(GATE0);
    for e in std::fs::read_dir(&f).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            let raw = std::fs::read(&p).unwrap();
            let st = SafeTensors::deserialize(&raw).unwrap();
            if st.names().contains(&name.as_str()) {
                let views: Vec<(String, TensorView)> = st.tensors().into_iter().filter(|(n, _)| *n != name).collect();
                let out = safetensors::tensor::serialize(views, None).unwrap();
                std::fs::write(&p, out).unwrap();
            }
        }
    }
    let e = open_err(&f);
    assert!(e.contains(&name) && e.contains("missing"), "{e}");
}

#[test]
fn bf16_experts_under_an_fp8_config_and_fp8_elsewhere_are_refused() {
    // A bf16 expert weight where config.json says fp8.
    let f = tiny("bf16-in-fp8", Some(Quantization::Fp8));
    replace_tensor(&f, GATE0, Dtype::BF16, vec![32, 64], vec![0u8; 32 * 64 * 2]);
    let e = open_err(&f);
    assert!(e.contains(GATE0) && e.contains("F8E4M3") && e.contains("quantization_config"), "{e}");
    // fp8 experts without the quantization_config that announces them.
    let g = tiny("fp8-unannounced", Some(Quantization::Fp8));
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(g.join("config.json")).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("quantization_config");
    std::fs::write(g.join("config.json"), cfg.to_string()).unwrap();
    let e = open_err(&g);
    assert!(e.contains("F8E4M3") && e.contains("quantization_config"), "{e}");
    // fp8 outside the routed experts.
    let h = tiny("fp8-router", Some(Quantization::Fp8));
    let router = "model.layers.1.mlp.gate.weight";
    replace_tensor(&h, router, Dtype::F8_E4M3, vec![16, 64], vec![0x38; 16 * 64]);
    let e = open_err(&h);
    assert!(e.contains(router) && e.contains("F8E4M3"), "{e}");
}

#[test]
fn unsupported_quantization_configs_are_refused_by_name() {
    let f = tiny("bad-qcfg", Some(Quantization::Fp8));
    let path = f.join("config.json");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (key, value, says) in [
        ("weight_block_size", serde_json::json!([64, 64]), "weight_block_size"),
        ("quant_method", serde_json::json!("awq"), "awq"),
        ("activation_scheme", serde_json::json!("static"), "static"),
    ] {
        let mut c = cfg.clone();
        c["quantization_config"][key] = value;
        std::fs::write(&path, c.to_string()).unwrap();
        let e = open_err(&f);
        assert!(e.contains(says) && e.contains("not supported"), "{e}");
    }
}

#[test]
fn serve_takes_sglangs_quantization_flag() {
    use dllm::server::ServeArgs;
    assert_eq!(ServeArgs::parse_from(["serve", "--quantization", "fp8"]).unwrap().load.quantization, Some(Quantization::Fp8));
    assert_eq!(ServeArgs::parse_from(["serve"]).unwrap().load.quantization, None);
    let e = ServeArgs::parse_from(["serve", "--quantization", "awq"]).unwrap_err().to_string();
    assert!(e.contains("awq") && e.contains("fp8"), "{e}");
    assert_eq!(serde_json::to_value(Quantization::Fp8).unwrap(), "fp8");
}

/// A rank's slice of a stored fp8 matrix takes the scales of the blocks it lies in: whole blocks
/// along the cut dimension, or one block it lies inside; a slice that cuts a block where the
/// rank's own block would need two scales is refused with what to do instead.
#[test]
#[allow(clippy::single_range_in_vec_init)] // one row range is a Slice::Rows of one
fn fp8_slices_keep_their_scale_blocks_whole() {
    use dllm::checkpoint::{fp8_scale_slice, Slice};
    let ok = |s: Slice| fp8_scale_slice("w", &s).unwrap();
    // Flash's experts (1024 wide) over 2 and 4 ranks; mini's (512) over 8: a rank inside one block.
    assert_eq!(ok(Slice::Rows(vec![512..1024])), Slice::Rows(vec![4..8]));
    assert_eq!(ok(Slice::Cols(256..512)), Slice::Cols(2..4));
    assert_eq!(ok(Slice::Rows(vec![64..128])), Slice::Rows(vec![0..1]));
    assert_eq!(ok(Slice::Cols(448..512)), Slice::Cols(3..4));
    // A ragged last block (144 = 128 + 16), the rank holding it whole or inside it.
    assert_eq!(ok(Slice::Rows(vec![128..144])), Slice::Rows(vec![1..2]));
    assert_eq!(ok(Slice::Rows(vec![0..144])), Slice::Rows(vec![0..2]));
    // Several row ranges: each but the last must end on a block boundary.
    assert_eq!(ok(Slice::Rows(vec![0..128, 256..300])), Slice::Rows(vec![0..1, 2..3]));
    assert_eq!(ok(Slice::Whole), Slice::Whole);
    for bad in [Slice::Rows(vec![72..144]), Slice::Cols(64..192), Slice::Rows(vec![64..128, 256..384]), Slice::Rows(vec![0..72, 128..256])]
    {
        let e = fp8_scale_slice("w", &bad).unwrap_err().to_string();
        assert!(e.contains("cuts the fp8 checkpoint's 128-wide scale blocks") && e.contains("--quantization fp8"), "{bad:?}: {e}");
    }
}

/// A block-FP8 checkpoint whose shared experts are fp8 too (DeepSeek-V3's layout quantizes them
/// with the routed experts'; make-model writes them bf16): it loads, and computes what the same
/// checkpoint with those fp8 weights dequantized into f32 computes, bit for bit (the CPU
/// dequantizes in f32 either way); the fp8 shared expert moves tiny's logits a little from the
/// bf16 one.
#[test]
fn an_fp8_shared_expert_loads_as_its_dequantized_weights() {
    let (bf16, fp8, f32) = (
        tiny("shared-bf16", Some(Quantization::Fp8)),
        tiny("shared-fp8", Some(Quantization::Fp8)),
        tiny("shared-f32", Some(Quantization::Fp8)),
    );
    store_shared_expert_as_fp8(&fp8, false);
    store_shared_expert_as_fp8(&f32, true);
    let ck = Checkpoint::open(&fp8).unwrap();
    let (name, _) = &shared_expert_matrices(&ck)[0];
    assert_eq!(ck.tensor(name).unwrap().dtype, DType::F8E4M3);
    let tokens: Vec<u32> = (0..24).map(|i| (i * 41 % 280) as u32).collect();
    let l = |d: &Path| logits(&mut CpuBackend::load(&Checkpoint::open(d).unwrap()).unwrap(), &tokens);
    let (a, q, w) = (l(&bf16), l(&fp8), l(&f32));
    assert!(q == w, "an fp8 shared expert must compute its dequantized weights' logits");
    let e =
        (q.iter().zip(&a).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>()).sqrt();
    eprintln!("tiny: fp8 shared expert against bf16 logits relative error {e:.2e}");
    assert!(e > 0.0 && e < 0.05, "{e}");
}

#[test]
fn an_fp8_shared_experts_scales_are_checked_and_fp8_needs_the_config() {
    // No scale beside the fp8 weight.
    let f = tiny("shared-no-scale", Some(Quantization::Fp8));
    let (name, [out, inp]) = shared_expert_matrices(&Checkpoint::open(&f).unwrap())[0].clone();
    replace_tensor(&f, &name, Dtype::F8_E4M3, vec![out, inp], vec![0x38; out * inp]);
    let scale = dllm::fp8::scale_name(&name);
    let e = open_err(&f);
    assert!(e.contains(&scale) && e.contains("missing"), "{e}");
    // A scale of the wrong shape.
    replace_tensors(&f, &name, vec![(scale.clone(), Dtype::F32, vec![2, 1], f32_bytes(&[1.0, 1.0]))]);
    let e = open_err(&f);
    assert!(e.contains(&scale) && e.contains("[2, 1]") && e.contains("[1, 1]"), "{e}");
    // A scale that is not f32.
    replace_tensors(&f, &name, vec![(scale.clone(), Dtype::BF16, vec![1, 1], vec![0x80, 0x3f])]);
    let e = open_err(&f);
    assert!(e.contains(&scale) && e.contains("F32"), "{e}");
    // fp8 shared experts in a checkpoint whose config.json announces no fp8.
    let b = tiny("shared-fp8-unannounced", None);
    replace_tensors(
        &b,
        &name,
        vec![(name.clone(), Dtype::F8_E4M3, vec![out, inp], vec![0x38; out * inp]), (scale, Dtype::F32, vec![1, 1], f32_bytes(&[1.0]))],
    );
    let e = open_err(&b);
    assert!(e.contains(&name) && e.contains("F8E4M3") && e.contains("quantization_config"), "{e}");
}
