//! The work each kernel of one denoising step must do: the fewest bytes it moves through device
//! memory (each input read once, each output written once) and its FLOPs, per step, summed over
//! the layers. `dllm bench kernels` divides them by the measured time of each kernel.

use crate::config::ModelConfig;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KernelWork {
    /// The name the CUDA backend's profile uses for the launch.
    pub name: &'static str,
    pub bytes: f64,
    pub flops: f64,
}

/// A denoising step's size: `batch` requests with a `prefix` cached and a `block` of queries
/// each, of which `predicted` rows in all (a mean over steps) go through the lm_head: the
/// positions still masked where the requests' algorithms read only those.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepDims {
    pub batch: usize,
    pub prefix: usize,
    pub block: usize,
    pub predicted: f64,
}

impl StepDims {
    /// Every block row predicted.
    pub fn whole(batch: usize, prefix: usize, block: usize) -> Self {
        StepDims { batch, prefix, block, predicted: (batch * block) as f64 }
    }
}

/// Which of the CUDA backend's fusions a step ran with: each moves work between the kernels'
/// rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepFusions {
    /// The MoE layers' shared expert runs inside the routed experts' launches (the CUDA backend
    /// does at a few tokens), so its work is counted under theirs.
    pub shared_in_experts: bool,
    /// A MoE layer's slots are summed by the next layer's input norm (add_moe_rms_norm;
    /// CudaOptions::fused_moe_norm), moe_combine then only combines the last layer's.
    pub fused_moe_norm: bool,
    /// The attention's output projection and the dense MLPs' down projections add into the
    /// residual stream (CudaOptions::residual_gemm): they read it as their GEMM's C, and the
    /// norms after them read no delta and write no x.
    pub residual_gemm: bool,
    /// The QKV projection is written in bf16 (CudaOptions::qkv_bf16): 2 bytes an element out of
    /// its GEMM and into qk_norm_rope_store instead of 4.
    pub qkv_bf16: bool,
    /// The lm_head writes bf16 logits (a sampled step under CudaOptions::sample_bf16): 2 bytes a
    /// logit instead of 4.
    pub logits_bf16: bool,
    /// The fp8 experts run W8A8 (CudaOptions::fp8_activations at these rows): the expert GEMMs
    /// read x's and act's e4m3 codes and scales, which quantize_rows_fp8 writes from the bf16 rows.
    pub w8a8_experts: bool,
    /// A greedy step's lm_head is lm_head_pick (CudaOptions::fused_pick on Hopper): the GEMM with
    /// the pick in its epilogue and its merge, instead of the lm_head GEMM and row_argmax.
    pub fused_pick: bool,
    /// The QKV projection is qkv_rope_store (CudaOptions::fused_qkv_rope at these rows): the GEMM
    /// with the QK norm, RoPE and K/V stores in its epilogue, instead of the QKV GEMM and
    /// qk_norm_rope_store.
    pub fused_qkv_rope: bool,
}

impl StepFusions {
    /// The CUDA backend's defaults, the shared expert where `shared_in_experts` says, but for the
    /// lm_head and the QKV projection, in their unfused forms here (on Hopper the backend's
    /// defaults are lm_head_pick and qkv_rope_store; `bench kernels` asks the backend for both):
    /// their FLOPs, all that the step floors take from this, are the same either way.
    pub fn defaults(shared_in_experts: bool) -> Self {
        StepFusions {
            shared_in_experts,
            fused_moe_norm: true,
            residual_gemm: true,
            qkv_bf16: true,
            logits_bf16: false,
            w8a8_experts: false,
            fused_pick: false,
            fused_qkv_rope: false,
        }
    }
}

/// Per-step work of every kernel for a step of `dims`; `experts_touched` per MoE layer (empty:
/// all experts); `fused`: what the step's kernels fused.
pub fn step_work(c: &ModelConfig, experts_touched: &[usize], dims: StepDims, fused: StepFusions) -> Vec<KernelWork> {
    let StepFusions { shared_in_experts, fused_moe_norm, residual_gemm, qkv_bf16, logits_bf16, w8a8_experts, fused_pick, fused_qkv_rope } =
        fused;
    let qkv_out = if qkv_bf16 { 2.0 } else { 4.0 };
    let StepDims { batch, prefix, block, predicted } = dims;
    let l = c.num_hidden_layers as f64;
    let moe_layers = (c.num_hidden_layers - c.first_k_dense_replace) as f64;
    let dense_layers = c.first_k_dense_replace as f64;
    let (h, d) = (c.hidden_size as f64, c.head_dim() as f64);
    let (nh, nkv, v) = (c.num_attention_heads as f64, c.num_key_value_heads as f64, c.vocab_size as f64);
    let (e, k, im) = (c.num_experts as f64, c.num_experts_per_tok as f64, c.moe_intermediate_size as f64);
    let s = c.shared_intermediate() as f64;
    let t = (batch * block) as f64; // query tokens
    let keys = (prefix + block) as f64;
    let qkv = c.qkv_rows() as f64;
    let pick_parts = predicted * (v / crate::backend::cuda::kernels::params::DENSE_WS_COLS as f64).ceil() * 12.0;
    let touched: f64 = if experts_touched.is_empty() { e * moe_layers } else { experts_touched.iter().sum::<usize>() as f64 };
    // One expert's [im, h] (= [h, im]) matrix: bf16, or fp8 codes and scales.
    let expert_matrix = crate::fp8::matrix_bytes(c.moe_intermediate_size, c.hidden_size, c.fp8_experts());
    // Activations: bf16 GEMM inputs (2 bytes), f32 GEMM outputs and residual stream (4 bytes).
    let gemm = |name, rows: f64, n: f64, kk: f64, layers: f64| KernelWork {
        name,
        bytes: layers * (n * kk * 2.0 + rows * kk * 2.0 + rows * n * 4.0),
        flops: layers * 2.0 * rows * n * kk,
    };
    // A GEMM that adds into the residual stream also reads it (its C).
    let resid_c = if residual_gemm { t * h * 4.0 } else { 0.0 };
    // The bytes an expert GEMM reads of an input row `cols` wide: bf16, or as W8A8 its codes and
    // one f32 scale a 128 columns.
    let w8a8_layers = if w8a8_experts { moe_layers } else { 0.0 };
    let row_in = |cols: f64| if w8a8_experts { cols + (cols / crate::fp8::BLOCK as f64).ceil() * 4.0 } else { cols * 2.0 };
    // The shared expert of each MoE layer and the dense MLP of the first layers share the kernels,
    // unless the shared expert runs with the routed ones (then its work is theirs: weights read
    // once, its activations bf16, its output f32).
    let (shared_layers, fused_layers) = if shared_in_experts { (0.0, moe_layers) } else { (moe_layers, 0.0) };
    let mlp_gu = KernelWork {
        name: "mlp gate_up",
        bytes: shared_layers * (2.0 * s * h * 2.0 + t * h * 2.0 + t * 2.0 * s * 4.0)
            + dense_layers * (2.0 * c.intermediate_size as f64 * h * 2.0 + t * h * 2.0 + t * 2.0 * c.intermediate_size as f64 * 4.0),
        flops: 2.0 * t * h * 2.0 * (shared_layers * s + dense_layers * c.intermediate_size as f64),
    };
    let inter_all = shared_layers * s + dense_layers * c.intermediate_size as f64;
    // Input norms that sum a MoE layer's slots (every MoE layer's but the last layer's), and the
    // moe_combine launches left.
    let slot_norms = if fused_moe_norm { (1..c.num_hidden_layers).filter(|&l| c.is_moe_layer(l - 1)).count() as f64 } else { 0.0 };
    let combines = moe_layers - slot_norms;
    // The shared expert's output, read where it ran beside the routed experts.
    let shared_y = if shared_in_experts { 0.0 } else { 4.0 };
    // Norms whose delta the GEMM before them added (the post-attention norms, and the input norms
    // after dense layers): x read, the normed rows out. The others (but the slot norms) read x and
    // the delta and write both.
    let added_norms = if residual_gemm { l + dense_layers } else { 0.0 };
    let delta_norms = 2.0 * l + 1.0 - slot_norms - added_norms;
    // The QKV projection and the rope store: the GEMM writing the QKV rows, then the norm reading
    // them; or the GEMM with the norm, rotation and stores in its epilogue (the weights and x in,
    // q and the block's K and V out).
    let (rope_out, rope_flops) = (l * t * (nh * d * 2.0 + 2.0 * nkv * d * 2.0), l * t * qkv * 8.0);
    let mut work = if fused_qkv_rope {
        vec![KernelWork {
            name: "qkv_rope_store",
            bytes: l * (qkv * h * 2.0 + t * h * 2.0) + rope_out,
            flops: l * 2.0 * t * qkv * h + rope_flops,
        }]
    } else {
        let mut w = gemm("qkv", t, qkv, h, l);
        w.bytes -= l * t * qkv * (4.0 - qkv_out);
        vec![w, KernelWork { name: "qk_norm_rope_store", bytes: l * t * qkv * qkv_out + rope_out, flops: rope_flops }]
    };
    work.extend([
        KernelWork {
            name: "block_attention",
            // Each request's K and V once per layer, its queries in, the outputs out.
            bytes: l * (batch as f64 * keys * nkv * d * 2.0 * 2.0 + t * nh * d * 2.0 * 2.0),
            flops: l * 4.0 * t * nh * d * keys,
        },
        {
            let mut w = gemm("attention out", t, h, nh * d, l);
            w.bytes += l * resid_c;
            w
        },
        KernelWork {
            name: "add_rms_norm",
            bytes: delta_norms * t * h * (4.0 + 4.0 + 4.0 + 2.0) + added_norms * t * h * (4.0 + 2.0),
            flops: (delta_norms + added_norms) * t * h * 5.0,
        },
        // x read and written, the slots and the shared expert's output read, the normed rows out.
        KernelWork {
            name: "add_moe_rms_norm",
            bytes: slot_norms * t * (k * h * 2.0 + h * (4.0 + 4.0 + 2.0 + shared_y)),
            flops: slot_norms * t * h * (2.0 * k + 5.0),
        },
        KernelWork {
            name: "router logits",
            bytes: moe_layers * (e * h * 2.0 + t * h * 2.0 + e * 4.0 + t * k * 8.0),
            flops: moe_layers * 2.0 * t * h * e,
        },
        KernelWork { name: "moe_permute", bytes: moe_layers * t * k * 8.0 * 3.0, flops: 0.0 },
        KernelWork {
            name: "moe_gate_up",
            bytes: touched * 2.0 * expert_matrix
                + moe_layers * (t * k * row_in(h) + t * k * im * 2.0)
                + fused_layers * (2.0 * s * h * 2.0 + t * h * 2.0 + t * s * 2.0),
            flops: moe_layers * 2.0 * t * k * 2.0 * im * h + fused_layers * (2.0 * t * 2.0 * s * h + t * s * 6.0),
        },
        KernelWork {
            name: "moe_down",
            bytes: touched * expert_matrix
                + moe_layers * (t * k * row_in(im) + t * k * h * 2.0)
                + fused_layers * (s * h * 2.0 + t * s * 2.0 + t * h * 2.0),
            flops: moe_layers * 2.0 * t * k * im * h + fused_layers * 2.0 * t * s * h,
        },
        // W8A8: x's rows (tokens) and act's (slots) read in bf16, their codes and scales written.
        KernelWork {
            name: "quantize_rows_fp8",
            bytes: w8a8_layers * (t * (h * 2.0 + row_in(h)) + t * k * (im * 2.0 + row_in(im))),
            flops: 0.0,
        },
        // The bf16 weighted slot rows in, the shared expert's output read, y (f32) written.
        KernelWork { name: "moe_combine", bytes: combines * t * (k * h * 2.0 + h * (4.0 + shared_y)), flops: combines * t * k * h * 2.0 },
        mlp_gu,
        KernelWork { name: "silu_mul", bytes: t * inter_all * (2.0 * 4.0 + 2.0), flops: t * inter_all * 6.0 },
        KernelWork {
            name: "mlp down",
            bytes: inter_all * h * 2.0 + l * t * h * 4.0 + t * inter_all * 2.0 + dense_layers * resid_c,
            flops: 2.0 * t * inter_all * h,
        },
        KernelWork { name: "embed_gather", bytes: t * h * (2.0 + 4.0), flops: 0.0 },
        KernelWork { name: "gather_rows", bytes: 2.0 * predicted * h * 4.0 * 2.0, flops: 0.0 },
    ]);
    // The lm_head and the pick: the GEMM writing logits, then row_argmax; or the GEMM with the
    // pick in its epilogue (the weights and x in, a part of three floats a row and column tile
    // out), then the parts read back by the merge.
    if fused_pick {
        work.push(KernelWork {
            name: "lm_head_pick",
            bytes: v * h * 2.0 + predicted * h * 2.0 + pick_parts,
            flops: 2.0 * predicted * v * h,
        });
        work.push(KernelWork { name: "lm_head_pick_merge", bytes: pick_parts, flops: 0.0 });
    } else {
        let mut w = gemm("lm_head", predicted, v, h, 1.0);
        if logits_bf16 {
            w.bytes -= predicted * v * 2.0;
        }
        work.push(w);
        work.push(KernelWork { name: "row_argmax", bytes: predicted * v * 4.0, flops: predicted * v * 3.0 });
    }
    work
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelRow {
    pub name: String,
    pub ms: f64,
    pub calls: f64,
    pub bytes: Option<f64>,
    pub flops: Option<f64>,
    pub gbps: Option<f64>,
    pub tflops: Option<f64>,
    /// "memory" or "compute": whichever ideal time is longer.
    pub bound: Option<&'static str>,
    /// Ideal time at the binding ceiling over the measured time.
    pub of_ceiling: Option<f64>,
}

/// The work-model entry a launch name is counted under (the instantiations of one kernel do the same
/// work).
fn work_name(launch: &str) -> &str {
    match launch {
        "block_attention_d64" | "block_attention_d256" | "block_attention_deep" => "block_attention",
        "qk_norm_rope_store_v4"
        | "qk_norm_rope_store_v8"
        | "qk_norm_rope_store_bf16"
        | "qk_norm_rope_store_v4_bf16"
        | "qk_norm_rope_store_v8_bf16" => "qk_norm_rope_store",
        "qkv_rope_store_r64" | "qkv_rope_store_r128" => "qkv_rope_store",
        // One CTA a row or a cluster of them (pick.rs): the same pass over the rows.
        l if l.starts_with("row_argmax") => "row_argmax",
        l if l.starts_with("moe_gate_up") => "moe_gate_up",
        l if l.starts_with("moe_down") => "moe_down",
        // A projection by cuBLAS or by the weight stream (csrc/dense_stream.cu): the same work.
        l if l.starts_with("cublas ") => &l["cublas ".len()..],
        l if l.starts_with("stream ") => &l["stream ".len()..],
        other => other,
    }
}

/// Join measured per-step times (name, ms, calls) with the work model.
pub fn rows(measured: &[(String, f64, f64)], work: &[KernelWork], bandwidth: f64, gemm_flops: f64) -> Vec<KernelRow> {
    measured
        .iter()
        .map(|(name, ms, calls)| {
            let w = work.iter().find(|w| w.name == work_name(name));
            let secs = ms / 1e3;
            let (mem_t, flop_t) = w.map(|w| (w.bytes / bandwidth, w.flops / gemm_flops)).unwrap_or((0.0, 0.0));
            KernelRow {
                name: name.clone(),
                ms: *ms,
                calls: *calls,
                bytes: w.map(|w| w.bytes),
                flops: w.map(|w| w.flops),
                gbps: w.map(|w| w.bytes / secs / 1e9),
                tflops: w.map(|w| w.flops / secs / 1e12),
                bound: w.map(|_| if mem_t >= flop_t { "memory" } else { "compute" }),
                of_ceiling: w.map(|_| mem_t.max(flop_t) / secs),
            }
        })
        .collect()
}

pub fn print_rows(rows: &[KernelRow]) {
    println!(
        "{:<24} {:>9} {:>6} {:>10} {:>9} {:>8} {:>8} {:>8} {:>9}",
        "kernel", "ms/step", "calls", "MB", "GFLOP", "GB/s", "TFLOP/s", "bound", "%ceiling"
    );
    let f = |v: Option<f64>, scale: f64, p: usize| v.map(|x| format!("{:.p$}", x / scale)).unwrap_or_else(|| "-".into());
    for r in rows {
        println!(
            "{:<24} {:>9.3} {:>6.1} {:>10} {:>9} {:>8} {:>8} {:>8} {:>9}",
            r.name,
            r.ms,
            r.calls,
            f(r.bytes, 1e6, 1),
            f(r.flops, 1e9, 2),
            f(r.gbps, 1.0, 0),
            f(r.tflops, 1.0, 2),
            r.bound.unwrap_or("-"),
            f(r.of_ceiling.map(|x| x * 100.0), 1.0, 1)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn floor_of(c: &ModelConfig, touched: &[usize]) -> f64 {
        let f = crate::bench::step_bytes(c, touched, 1, 1024, 32);
        f.weights + f.kv - 1e6 * 20.0
    }

    #[test]
    fn the_lm_head_is_counted_once_in_either_form() {
        // The step floor sums the model's FLOPs: the fused pick replaces the lm_head GEMM and
        // row_argmax, it does not add to them (a first form counted both: a batch-128 floor 12%
        // too high).
        let c = crate::config::preset("mini").unwrap();
        let dims = StepDims { batch: 64, prefix: 1024, block: 32, predicted: 1700.0 };
        let of = |fused_pick| step_work(&c, &[], dims, StepFusions { fused_pick, ..StepFusions::defaults(false) });
        let (plain, fused) = (of(false), of(true));
        let names =
            |w: &[KernelWork]| w.iter().map(|k| k.name).filter(|n| n.starts_with("lm_head") || *n == "row_argmax").collect::<Vec<_>>();
        assert_eq!(names(&plain), ["lm_head", "row_argmax"]);
        assert_eq!(names(&fused), ["lm_head_pick", "lm_head_pick_merge"]);
        let flops = |w: &[KernelWork]| w.iter().map(|k| k.flops).sum::<f64>();
        let argmax = plain.iter().find(|k| k.name == "row_argmax").unwrap().flops;
        assert!((flops(&plain) - argmax - flops(&fused)).abs() < 1e-9 * flops(&plain), "{} vs {}", flops(&plain), flops(&fused));
        // Fused, the logits (f32, written and read back) are not moved.
        let bytes = |w: &[KernelWork]| w.iter().map(|k| k.bytes).sum::<f64>();
        let logits = 1700.0 * c.vocab_size as f64 * 4.0;
        assert!(bytes(&plain) - bytes(&fused) > 1.9 * logits, "{} vs {}", bytes(&plain), bytes(&fused));
    }

    #[test]
    fn the_qkv_projection_is_counted_once_in_either_form() {
        // qkv_rope_store replaces the QKV GEMM and qk_norm_rope_store: the same FLOPs, and the QKV
        // rows neither written nor read.
        let c = crate::config::preset("mini").unwrap();
        let dims = StepDims::whole(64, 1024, 32);
        let of = |fused_qkv_rope| step_work(&c, &[], dims, StepFusions { fused_qkv_rope, ..StepFusions::defaults(false) });
        let (plain, fused) = (of(false), of(true));
        let names = |w: &[KernelWork]| w.iter().map(|k| k.name).filter(|n| n.starts_with("qk")).collect::<Vec<_>>();
        assert_eq!(names(&plain), ["qkv", "qk_norm_rope_store"]);
        assert_eq!(names(&fused), ["qkv_rope_store"]);
        let flops = |w: &[KernelWork]| w.iter().map(|k| k.flops).sum::<f64>();
        assert!((flops(&plain) - flops(&fused)).abs() < 1e-9 * flops(&plain), "{} vs {}", flops(&plain), flops(&fused));
        let bytes = |w: &[KernelWork]| w.iter().map(|k| k.bytes).sum::<f64>();
        let qkv_rows = c.num_hidden_layers as f64 * 64.0 * 32.0 * c.qkv_rows() as f64 * 2.0;
        assert!((bytes(&plain) - bytes(&fused) - 2.0 * qkv_rows).abs() < 1e-6 * qkv_rows, "{} vs {}", bytes(&plain), bytes(&fused));
    }

    #[test]
    fn work_adds_up_to_the_step_floor() {
        // The kernels' weight bytes must cover what bench::step_bytes counts for the step.
        let c = crate::config::preset("mini").unwrap();
        let touched = vec![140; 19];
        let w = step_work(&c, &touched, StepDims::whole(1, 1024, 32), StepFusions::defaults(false));
        let total: f64 = w.iter().map(|k| k.bytes).sum();
        // The shared expert counted under the experts' launches: the same weights, the same FLOPs.
        let fused = step_work(&c, &touched, StepDims::whole(1, 1024, 32), StepFusions::defaults(true));
        let flops = |w: &[KernelWork]| w.iter().map(|k| k.flops).sum::<f64>();
        assert!((flops(&w) - flops(&fused)).abs() < 1e-9 * flops(&w));
        assert!(fused.iter().find(|k| k.name == "moe_gate_up").unwrap().bytes > w.iter().find(|k| k.name == "moe_gate_up").unwrap().bytes);
        let fused_total: f64 = fused.iter().map(|k| k.bytes).sum();
        assert!(fused_total >= floor_of(&c, &touched) && fused_total < total * 1.01, "{fused_total} vs {total}");
        let floor = crate::bench::step_bytes(&c, &touched, 1, 1024, 32);
        assert!(total >= floor.weights + floor.kv - 1e6 * 20.0, "{total} vs {:?}", floor);
        assert!(total < (floor.weights + floor.kv) * 1.1, "{total} vs {:?}", floor);
        // And with fp8 experts: the expert GEMMs' bytes shrink with the floor's.
        let q = c.clone().quantized(Some(crate::fp8::Quantization::Fp8));
        let (wq, fq) = (
            step_work(&q, &touched, StepDims::whole(1, 1024, 32), StepFusions::defaults(false)),
            crate::bench::step_bytes(&q, &touched, 1, 1024, 32),
        );
        let tq: f64 = wq.iter().map(|k| k.bytes).sum();
        assert!(tq >= fq.weights + fq.kv - 1e6 * 20.0 && tq < (fq.weights + fq.kv) * 1.1, "{tq} vs {fq:?}");
        assert!(tq < total * 0.6, "{tq} vs {total}");
        // As W8A8 at batch 64: the expert GEMMs read half of x's and act's bytes (and the scales),
        // and quantize_rows_fp8 does that work.
        let at64 =
            |w8a8_experts| step_work(&q, &[], StepDims::whole(64, 1024, 32), StepFusions { w8a8_experts, ..StepFusions::defaults(false) });
        let (a16, a8) = (at64(false), at64(true));
        let of = |w: &[KernelWork], name: &str| w.iter().find(|k| k.name == name).unwrap().bytes;
        let (x_rows, act_rows) = (2048.0 * 19.0 * 8.0 * 2048.0, 2048.0 * 19.0 * 8.0 * 512.0);
        assert!((of(&a16, "moe_gate_up") - of(&a8, "moe_gate_up") - x_rows * (1.0 - 16.0 * 4.0 / 2048.0)).abs() < 1.0);
        assert!((of(&a16, "moe_down") - of(&a8, "moe_down") - act_rows * (1.0 - 4.0 * 4.0 / 512.0)).abs() < 1.0);
        assert_eq!(of(&a16, "quantize_rows_fp8"), 0.0);
        assert!(of(&a8, "quantize_rows_fp8") > 3.0 * (x_rows / 8.0 + act_rows));
        // The expert GEMMs dominate at batch 1; the lm_head and attention are visible.
        let moe = w.iter().filter(|k| k.name.starts_with("moe_gate_up") || k.name == "moe_down").map(|k| k.bytes).sum::<f64>();
        assert!(moe / total > 0.8, "{}", moe / total);
        // At batch 64 the matrix work is ~5.7 TFLOP as the north star says.
        let flops: f64 = step_work(&c, &[], StepDims::whole(64, 1024, 32), StepFusions::defaults(false)).iter().map(|k| k.flops).sum();
        assert!((4.0e12..7.0e12).contains(&flops), "{flops:e}");
    }
}
