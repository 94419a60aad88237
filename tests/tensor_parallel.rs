//! The CPU twin of tensor parallelism: N ranks as threads, each holding its shard of the tiny
//! model (backend::shard's rules), meeting in memory for the all-reduces and the vocab-parallel
//! pick. Their logits must be the whole model's within f32 rounding, for N = 2 (KV heads split)
//! and N = 4 (KV heads replicated, 1 query head and 8 expert columns a rank), so every slicing
//! rule is checked here without GPUs.

use dllm::backend::cpu::{CpuBackend, Mat};
use dllm::backend::mem_group::MemGroup;
use dllm::backend::ranks::Ranks;
use dllm::backend::shard::Shard;
use dllm::backend::{Backend, ExpertMath, GraphSteps, LayerRouting, Linear, Measure, Norm, StepBatch};
use dllm::checkpoint::Checkpoint;
use dllm::decode::Policy;
use dllm::engine::{Engine, GenParams, Runner};
use dllm::runtime::{self, Device, LoadOptions};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

mod common;

fn tiny() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("dllm-tp-test-{}", std::process::id()));
        dllm::make_model::make_model("tiny", &d, 3).expect("making the tiny model");
        d
    })
    .clone()
}

/// Two requests in one forward: a prompt ending mid-block, and one spanning three blocks.
fn batch(r: &mut impl Runner) -> (StepBatch, Vec<usize>) {
    let a: Vec<u32> = (0..13).map(|i| (i * 37 + 5) % 280).collect();
    let b: Vec<u32> = (0..24).map(|i| (i * 91 + 11) % 280).collect();
    let (sa, sb) = (r.open_seq(16).unwrap(), r.open_seq(24).unwrap());
    let mut batch = StepBatch::default();
    batch.push(sa, 0, &a, 8);
    batch.push(sb, 0, &b, 8);
    (batch, (0..37).collect())
}

fn max_rel_diff(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    got.iter().zip(want).map(|(a, b)| (a - b).abs() as f64).fold(0.0, f64::max) / scale
}

#[test]
fn sharded_forward_gives_the_whole_models_logits_and_picks() {
    let dir = tiny();
    let ck = Arc::new(Checkpoint::open(&dir).unwrap());
    let cfg = ck.config.clone();
    let mut whole = CpuBackend::load(&ck).unwrap();
    let (b, rows) = batch(&mut whole);
    let want = whole.logits(&cfg, &b, &rows).unwrap();
    let mut whole = CpuBackend::load(&ck).unwrap();
    let (b, rows) = batch(&mut whole);
    let want_picks = whole.pick(&cfg, &b, &rows).unwrap();
    for n in [2, 4] {
        let mut ranks = runtime::cpu_ranks(&ck, n, None).unwrap();
        let (b, rows) = batch(&mut ranks);
        let got = ranks.logits(&cfg, &b, &rows).unwrap();
        let d = max_rel_diff(&got, &want);
        eprintln!("tp {n}: max |logit difference| / max |logit| = {d:.2e}");
        assert!(d < 1e-5, "tp {n}: logits differ by {d:.2e} of their scale");
        // The vocab-parallel pick (shares combined, logits never gathered) on fresh caches.
        let mut ranks = runtime::cpu_ranks(&ck, n, None).unwrap();
        let (b, rows) = batch(&mut ranks);
        let picks = ranks.pick(&cfg, &b, &rows).unwrap();
        for (i, (p, w)) in picks.iter().zip(&want_picks).enumerate() {
            assert_eq!(p.token, w.token, "tp {n}, row {i}");
            assert!((p.prob - w.prob).abs() <= 1e-5 * w.prob.max(1e-3), "tp {n}, row {i}: {} vs {}", p.prob, w.prob);
        }
    }
}

/// tiny's fp8 checkpoint as make-model writes it (`moe_inter` None: its experts 32 wide, in one
/// 128 x 128 scale block), or with its experts `moe_inter` wide: the experts and their scales drawn
/// anew, every block its own scale, into one model.safetensors; the other tensors as make-model
/// wrote them.
fn tiny_fp8(tag: &str, moe_inter: Option<usize>) -> PathBuf {
    use safetensors::{tensor::TensorView, Dtype, SafeTensors};
    let dir = std::env::temp_dir().join(format!("dllm-tp-fp8-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dllm::make_model::make_model_quantized("tiny", &dir, 3, Some(dllm::fp8::Quantization::Fp8)).unwrap();
    let Some(moe_inter) = moe_inter else { return dir };
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["moe_intermediate_size"] = moe_inter.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let c: dllm::config::ModelConfig = serde_json::from_value(cfg).unwrap();
    // What make-model wrote, by name.
    let mut old = std::collections::HashMap::new();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "safetensors") {
            let raw = std::fs::read(&path).unwrap();
            for (name, t) in SafeTensors::deserialize(&raw).unwrap().tensors() {
                old.insert(name, (t.dtype(), t.shape().to_vec(), t.data().to_vec()));
            }
            std::fs::remove_file(&path).unwrap();
        }
    }
    std::fs::remove_file(dir.join("model.safetensors.index.json")).unwrap();
    let mut rng = dllm::rng::Rng::new(11);
    let mut tensors = vec![];
    for (name, shape) in dllm::checkpoint::expected_tensors(&c) {
        let n: usize = shape.iter().product();
        let t = match old.remove(&name) {
            Some((dtype, s, data)) if s == shape => (dtype, data),
            // A block's scale: 1-3 thousandths, so that the blocks differ.
            _ if name.ends_with("_scale_inv") => {
                (Dtype::F32, (0..n).flat_map(|_| ((1.0 + 2.0 * rng.uniform()) as f32 * 1e-3).to_le_bytes()).collect())
            }
            // An expert's e4m3 codes, any but the two NaN codes.
            _ if name.contains(".experts.") => {
                (Dtype::F8_E4M3, (0..n).map(|_| (rng.uniform() * 254.0) as u8).map(|b| if b & 0x7F == 0x7F { b - 1 } else { b }).collect())
            }
            _ => (Dtype::BF16, (0..n).flat_map(|_| half::bf16::from_f32((rng.normal() * 0.05) as f32).to_le_bytes()).collect()),
        };
        tensors.push((name, shape, t));
    }
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(name, shape, (dtype, data))| (name.clone(), TensorView::new(*dtype, shape.clone(), data).unwrap())).collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::tensor::serialize(views, None).unwrap()).unwrap();
    dir
}

/// A checkpoint stored with fp8 experts, sharded: each rank reads its slice of the codes and the
/// scales of the blocks they lie in (`Checkpoint::fp8_slice`, what a GPU rank uploads), and the
/// ranks' logits are the whole fp8 model's: tiny's experts (one block), and 256 wide (two blocks
/// along each expert's cut: 2 ranks take one block each, 4 ranks half of one). At 144 wide (a
/// block and a ragged 16) 2 ranks would cut the first block: refused at load, saying why. Each
/// also with its shared experts stored fp8 (sliced by the same rules, dequantized at load).
#[test]
fn sharded_fp8_checkpoint_gives_the_whole_models_logits() {
    for (tag, moe_inter, shared_fp8) in
        [("tiny", None, false), ("wide", Some(256), false), ("tiny-shared", None, true), ("wide-shared", Some(256), true)]
    {
        let dir = tiny_fp8(tag, moe_inter);
        if shared_fp8 {
            common::checkpoints::store_shared_expert_as_fp8(&dir, false);
        }
        let ck = Arc::new(Checkpoint::open(&dir).unwrap());
        assert!(ck.config.fp8_experts());
        let cfg = ck.config.clone();
        let mut whole = CpuBackend::load(&ck).unwrap();
        let (b, rows) = batch(&mut whole);
        let want = whole.logits(&cfg, &b, &rows).unwrap();
        for n in [2, 4] {
            let mut ranks = runtime::cpu_ranks(&ck, n, None).unwrap();
            let (b, rows) = batch(&mut ranks);
            let d = max_rel_diff(&ranks.logits(&cfg, &b, &rows).unwrap(), &want);
            eprintln!("fp8 checkpoint ({tag}), tp {n}: max |logit difference| / max |logit| = {d:.2e}");
            assert!(d < 1e-5, "fp8 checkpoint ({tag}), tp {n}: logits differ by {d:.2e} of their scale");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let dir = tiny_fp8("cut", Some(144));
    let ck = Arc::new(Checkpoint::open(&dir).unwrap());
    assert!(CpuBackend::load(&ck).is_ok());
    let e = match runtime::cpu_ranks(&ck, 2, None) {
        Ok(_) => panic!("2 ranks of 72 expert rows each cut a scale block; expected an error"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("cuts the fp8 checkpoint's 128-wide scale blocks") && e.contains("--quantization fp8"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn greedy_and_sampled_generations_match_one_rank() {
    let dir = tiny();
    let ck = Arc::new(Checkpoint::open(&dir).unwrap());
    let prompt: Vec<u32> = (0..21).map(|i| (i * 53 + 7) % 280).collect();
    let greedy = GenParams { max_new_tokens: 24, block_size: 8, policy: Policy::LowConfidence { threshold: 0.5 }, ..GenParams::default() };
    // Temperature and a penalty take the host-logits path: whole rows gathered from the ranks.
    let sampled = GenParams { temperature: 0.8, top_k: 50, seed: 9, repetition_penalty: 1.3, ..greedy.clone() };
    let run = |n: usize, p: &GenParams| {
        let tok = dllm::tokenizer::Tokenizer::open(&dir, &ck.config).unwrap();
        if n == 1 {
            Engine::new(CpuBackend::load(&ck).unwrap(), ck.config.clone(), tok.mask_id, tok.eos_id).generate(prompt.clone(), p.clone())
        } else {
            Engine::new(runtime::cpu_ranks(&ck, n, None).unwrap(), ck.config.clone(), tok.mask_id, tok.eos_id)
                .generate(prompt.clone(), p.clone())
        }
        .unwrap()
    };
    for p in [&greedy, &sampled] {
        let one = run(1, p);
        assert!(!one.output_ids.is_empty());
        for n in [2, 4] {
            let tp = run(n, p);
            assert_eq!(tp.output_ids, one.output_ids, "tp {n}, temperature {}", p.temperature);
            assert_eq!(tp.steps, one.steps);
        }
    }
}

/// LLaDA2.2's block routing on ranks: every rank holds the whole router and bias and routes
/// alike (the twin checks the ids at every MoE layer), so 2 and 4 ranks generate what one does.
#[test]
fn block_routed_generations_match_one_rank() {
    let dir = std::env::temp_dir().join(format!("dllm-tp-test-{}-22", std::process::id()));
    dllm::make_model::Plan::for_family("tiny", dllm::config::Family::Llada22, 3, None).unwrap().write(&dir).unwrap();
    let ck = Arc::new(Checkpoint::open(&dir).unwrap());
    let tok = dllm::tokenizer::Tokenizer::open(&dir, &ck.config).unwrap();
    let prompt: Vec<u32> = (0..45).map(|i| (i * 53 + 7) % 280).collect();
    let p = GenParams { max_new_tokens: 40, block_size: 32, policy: Policy::LowConfidence { threshold: 0.5 }, ..GenParams::default() };
    let one = Engine::new(CpuBackend::load(&ck).unwrap(), ck.config.clone(), tok.mask_id, tok.eos_id)
        .generate(prompt.clone(), p.clone())
        .unwrap();
    for n in [2, 4] {
        let ranks = runtime::cpu_ranks(&ck, n, None).unwrap();
        let tp = Engine::new(ranks, ck.config.clone(), tok.mask_id, tok.eos_id).generate(prompt.clone(), p.clone()).unwrap();
        assert_eq!((tp.output_ids, tp.steps), (one.output_ids.clone(), one.steps), "tp {n}");
    }
    // JointThresholdInDel on ranks: its steps read row summaries, which each CPU rank makes
    // from the whole rows gathered from the ranks, so they take the one-rank steps (the
    // probabilities within the rounding of the ranks' partial sums).
    let indel = GenParams { policy: Policy::JointThresholdInDel(Default::default()), ..p.clone() };
    let one = Engine::new(CpuBackend::load(&ck).unwrap(), ck.config.clone(), tok.mask_id, tok.eos_id)
        .generate(prompt.clone(), indel.clone())
        .unwrap();
    let ranks = runtime::cpu_ranks(&ck, 2, None).unwrap();
    let tp = Engine::new(ranks, ck.config.clone(), tok.mask_id, tok.eos_id).generate(prompt.clone(), indel).unwrap();
    assert_eq!((tp.output_ids, tp.steps), (one.output_ids, one.steps), "InDel on 2 ranks");
    assert!(tp.output_probs.iter().zip(&one.output_probs).all(|(a, b)| (a - b).abs() < 1e-4), "InDel on 2 ranks: the probabilities");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_tp_size_that_does_not_divide_the_model_is_a_startup_error() {
    let dir = tiny();
    let opts = LoadOptions { tp_size: 3, ..LoadOptions::on(Device::Cpu) };
    let err = format!("{:#}", runtime::load_with(&dir, &opts).err().expect("tp 3 must fail"));
    assert!(err.contains("--tp-size 3 does not divide num_attention_heads (4)"), "{err}");
    let opts = LoadOptions { tp_size: 0, ..LoadOptions::on(Device::Cpu) };
    assert!(runtime::load_with(&dir, &opts).is_err());
    // The whole CLI path: `generate --device cpu --tp-size 2` runs the ranks.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dllm"))
        .args(["generate", "--model-path", dir.to_str().unwrap(), "--device", "cpu", "--tp-size", "2", "--max-new-tokens", "8", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["backend"].as_str().unwrap().starts_with("tensor parallel over 2 ranks"), "{v}");
    // With fp8 experts each rank rounds its slices through block FP8.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dllm"))
        .args(["generate", "--model-path", dir.to_str().unwrap(), "--device", "cpu", "--tp-size", "2", "--quantization", "fp8"])
        .args(["--max-new-tokens", "8", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A rank backend that fails, on request, in one layer's feed-forward: where every rank fails
/// alike the error is ordinary; where only one does, the others wait in its all-reduce. It
/// keeps every draw it is given (`Head::Sample`'s), in order, and pads a step's output rows to
/// a multiple of `pad_rows_to` (0: not at all) as a backend recording step shapes does. It
/// reports each forward as a replayed graph, and counts how often it is asked for those counts.
struct Failing {
    inner: CpuBackend,
    fail_ffn: Arc<std::sync::atomic::AtomicBool>,
    draws: Arc<std::sync::Mutex<Vec<dllm::decode::sample::RowDraw>>>,
    pad_rows_to: usize,
    forwards: u64,
    graph_asks: Arc<std::sync::atomic::AtomicUsize>,
}

impl Backend for Failing {
    type Act = Mat;
    fn name(&self) -> String {
        self.inner.name()
    }
    fn max_seq_len(&self) -> usize {
        self.inner.max_seq_len()
    }
    fn alloc_seq(&mut self, max_len: usize) -> anyhow::Result<usize> {
        self.inner.alloc_seq(max_len)
    }
    fn free_seq(&mut self, slot: usize) {
        self.inner.free_seq(slot)
    }
    fn embed(&mut self, tokens: &[u32]) -> anyhow::Result<Mat> {
        self.forwards += 1;
        self.inner.embed(tokens)
    }
    fn add_rms_norm(&mut self, x: &mut Mat, delta: Option<&Mat>, w: Norm) -> anyhow::Result<Mat> {
        self.inner.add_rms_norm(x, delta, w)
    }
    fn linear(&mut self, x: &Mat, w: Linear) -> anyhow::Result<Mat> {
        self.inner.linear(x, w)
    }
    fn qk_norm_rope_store(&mut self, qkv: &Mat, layer: usize, batch: &StepBatch) -> anyhow::Result<Mat> {
        self.inner.qk_norm_rope_store(qkv, layer, batch)
    }
    fn attention(&mut self, q: &Mat, layer: usize, batch: &StepBatch) -> anyhow::Result<Mat> {
        self.inner.attention(q, layer, batch)
    }
    fn ffn(&mut self, x: &Mat, layer: usize, batch: &StepBatch) -> anyhow::Result<Mat> {
        if layer == 1 && self.fail_ffn.load(std::sync::atomic::Ordering::SeqCst) {
            anyhow::bail!("injected failure");
        }
        self.inner.ffn(x, layer, batch)
    }
    fn all_reduce(&mut self, x: &mut Mat) -> anyhow::Result<()> {
        self.inner.all_reduce(x)
    }
    fn gather_rows(&mut self, x: &Mat, rows: &[usize]) -> anyhow::Result<Mat> {
        self.inner.gather_rows(x, rows)
    }
    fn head(&mut self, x: &Mat, head: dllm::backend::Head) -> anyhow::Result<()> {
        self.inner.head(x, head)
    }
    fn set_draws(&mut self, draws: &[dllm::decode::sample::RowDraw]) -> anyhow::Result<()> {
        self.draws.lock().unwrap().extend_from_slice(draws);
        self.inner.set_draws(draws)
    }
    fn read_picks(&mut self) -> anyhow::Result<Vec<dllm::decode::Pick>> {
        self.inner.read_picks()
    }
    fn read_logits(&mut self) -> anyhow::Result<Vec<f32>> {
        self.inner.read_logits()
    }
    fn padded_out_rows(&self, _batch: &StepBatch, rows: usize) -> usize {
        if self.pad_rows_to == 0 {
            rows
        } else {
            rows.next_multiple_of(self.pad_rows_to)
        }
    }
}

/// What a tensor-parallel group's ranks must also answer (the engine's measures): the CPU's.
impl Measure for Failing {
    fn count_experts(&mut self, on: bool) {
        self.inner.count_experts(on)
    }
    fn experts_touched(&self) -> Vec<usize> {
        self.inner.experts_touched()
    }
    fn record_routing(&mut self, on: bool) {
        self.inner.record_routing(on)
    }
    fn routing(&self) -> Vec<LayerRouting> {
        self.inner.routing()
    }
    fn expert_bias(&self, layer: usize) -> anyhow::Result<Vec<f32>> {
        self.inner.expert_bias(layer)
    }
    fn set_expert_bias(&mut self, layer: usize, bias: &[f32]) -> anyhow::Result<()> {
        self.inner.set_expert_bias(layer, bias)
    }
    fn measure_copy_bandwidth(&mut self) -> anyhow::Result<f64> {
        self.inner.measure_copy_bandwidth()
    }
    fn expert_math(&self, rows: usize) -> ExpertMath {
        self.inner.expert_math(rows)
    }
    fn graph_steps(&self) -> Option<GraphSteps> {
        self.graph_asks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(GraphSteps { recorded: 0, replayed: self.forwards })
    }
}

/// Two CPU ranks of [`Failing`] over `ck`, rank r failing while `fail[r]` is set and counting its
/// graph-count answers in `asks[r]`, their collectives abortable.
fn failing_ranks(
    ck: &Arc<Checkpoint>,
    fail: Vec<Arc<std::sync::atomic::AtomicBool>>,
    asks: Vec<Arc<std::sync::atomic::AtomicUsize>>,
) -> Ranks<Failing> {
    let group = MemGroup::new(2);
    let (g, c) = (group.clone(), ck.clone());
    Ranks::spawn(2, move |rank| {
        let inner = CpuBackend::load_rank(&c, Shard { rank, size: 2 }, Some(g.clone()), None)?;
        Ok(Failing {
            inner,
            fail_ffn: fail[rank].clone(),
            draws: Default::default(),
            pad_rows_to: 0,
            forwards: 0,
            graph_asks: asks[rank].clone(),
        })
    })
    .unwrap()
    .with_abort(move || group.abort())
}

/// Failures never hang the group: an error every rank hits (a token outside the vocabulary)
/// is an ordinary error and the group serves on; one rank failing alone stops the group within
/// its stuck-after time with an error naming it, and every later job is refused with it.
#[test]
fn a_rank_failing_alone_stops_the_group_instead_of_hanging_it() {
    let dir = tiny();
    let ck = Arc::new(Checkpoint::open(&dir).unwrap());
    let cfg = ck.config.clone();
    let flags: Vec<_> = (0..2).map(|_| Arc::new(std::sync::atomic::AtomicBool::new(false))).collect();
    let mut ranks = failing_ranks(&ck, flags.clone(), (0..2).map(|_| Default::default()).collect())
        .with_stuck_after(std::time::Duration::from_millis(300));
    let forward = |r: &mut Ranks<Failing>, tokens: &[u32]| {
        let slot = r.open_seq(16).unwrap();
        let mut b = StepBatch::default();
        b.push(slot, 0, tokens, 8);
        let out = r.pick(&cfg, &b, &[0, 1]);
        r.close_seq(slot);
        out
    };
    let err = format!("{:#}", forward(&mut ranks, &[1, 2, 100_000]).unwrap_err());
    assert!(err.contains("outside the vocabulary"), "{err}");
    assert!(forward(&mut ranks, &[1, 2, 3]).is_ok(), "an error every rank hit leaves the group serving");
    flags[1].store(true, std::sync::atomic::Ordering::SeqCst);
    let t = std::time::Instant::now();
    let err = format!("{:#}", forward(&mut ranks, &[1, 2, 3]).unwrap_err());
    assert!(err.contains("rank 1 failed alone") && err.contains("injected failure"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    flags[1].store(false, std::sync::atomic::Ordering::SeqCst);
    let slot = ranks.open_seq(16);
    assert!(format!("{:#}", slot.unwrap_err()).contains("the group is stopped"));
}

/// The group keeps rank 0's graph counts from each forward's own job, so reading them after a
/// step (the server's metrics do, every step) asks no rank; before the first forward and after a
/// failed one it asks every rank.
#[test]
fn graph_counts_come_back_with_each_forward() {
    let dir = tiny();
    let ck = Arc::new(Checkpoint::open(&dir).unwrap());
    let cfg = ck.config.clone();
    let asks: Vec<Arc<std::sync::atomic::AtomicUsize>> = (0..2).map(|_| Default::default()).collect();
    let mut ranks = failing_ranks(&ck, (0..2).map(|_| Default::default()).collect(), asks.clone());
    let asked = || asks.iter().map(|a| a.load(std::sync::atomic::Ordering::SeqCst)).collect::<Vec<_>>();
    let replayed = |n| Some(GraphSteps { recorded: 0, replayed: n });
    assert_eq!(ranks.graph_steps(), replayed(0));
    assert_eq!(asked(), [1, 1], "no forward yet: every rank is asked");
    let slot = ranks.open_seq(16).unwrap();
    for (n, tokens) in [[1u32, 2, 3], [4, 5, 6]].iter().enumerate() {
        let mut b = StepBatch::default();
        b.push(slot, 0, tokens, 8);
        ranks.pick(&cfg, &b, &[0, 1]).unwrap();
        for _ in 0..3 {
            assert_eq!(ranks.graph_steps(), replayed(n as u64 + 1));
        }
        assert_eq!(asked(), [n + 2, n + 2], "only the forward's own job asks");
    }
    let mut b = StepBatch::default();
    b.push(slot, 0, &[1, 2, 100_000], 8);
    assert!(ranks.pick(&cfg, &b, &[0, 1]).is_err());
    assert_eq!(ranks.graph_steps(), replayed(3));
    assert_eq!(asked(), [4, 4], "after a failed forward every rank is asked");
    ranks.close_seq(slot);
}

/// Sampled decoding: a backend's own draws (`Head::Sample`, what the CUDA sampler does on the
/// device) against the host's sampling of gathered logits (what tensor-parallel ranks do), with
/// the same seeds: the same tokens and confidences, since each row's uniform comes from its
/// request's generator in the same order and both apply `sample_row_u`. The backend predicts
/// only the rows of positions still masked (LowConfidence never reads the others' picks),
/// padded to a multiple of 4 rows (skipped draws); the host draws every row.
#[test]
fn backend_draws_equal_host_sampling_of_gathered_logits() {
    let dir = tiny();
    let ck = Arc::new(Checkpoint::open(&dir).unwrap());
    let cfg = ck.config.clone();
    let tok = dllm::tokenizer::Tokenizer::open(&dir, &cfg).unwrap();
    let draws = Arc::new(std::sync::Mutex::new(vec![]));
    let backend = Failing {
        inner: CpuBackend::load(&ck).unwrap(),
        fail_ffn: Default::default(),
        draws: draws.clone(),
        pad_rows_to: 4,
        forwards: 0,
        graph_asks: Default::default(),
    };
    let mut own = Engine::new(backend, cfg.clone(), tok.mask_id, tok.eos_id);
    let mut gathered = Engine::new(runtime::cpu_ranks(&ck, 2, None).unwrap(), cfg.clone(), tok.mask_id, tok.eos_id);
    assert!(own.backend.samples() && !gathered.backend.samples());
    let prompt: Vec<u32> = (0..11).map(|i| (i * 53 + 7) % 280).collect();
    let mut positions = 0;
    for (t, p, k, seed) in [(0.7f32, 0.9f32, 0usize, 1u64), (1.3, 1.0, 20, 2), (0.5, 0.5, 5, 3)] {
        let params = GenParams {
            max_new_tokens: 24,
            block_size: 8,
            temperature: t,
            top_p: p,
            top_k: k,
            seed,
            policy: Policy::LowConfidence { threshold: 0.9 },
            ignore_eos: true,
            ..GenParams::default()
        };
        let a = own.generate(prompt.clone(), params.clone()).unwrap();
        let b = gathered.generate(prompt.clone(), params).unwrap();
        positions += a.steps * 8;
        assert_eq!(a.output_ids, b.output_ids, "temperature {t} top-p {p} top-k {k}");
        for (x, y) in a.output_probs.iter().zip(&b.output_probs) {
            assert!((x - y).abs() < 1e-4, "confidence {x} vs {y}");
        }
    }
    // Blocks of 8 over a prompt of 11: its first generated block holds 3 prompt tokens, and
    // every block's later steps hold unmasked positions; those rows were not predicted. The
    // padding's rows were, skipped.
    let seen = draws.lock().unwrap();
    let skipped = seen.iter().filter(|d| d.skip).count();
    assert!(seen.len() % 4 == 0, "{} rows: not padded to 4", seen.len());
    assert!(
        skipped > 0 && seen.len() - skipped < positions * 3 / 4,
        "{} rows drawn, {skipped} skipped, of {positions} positions",
        seen.len()
    );
}
