//! What benchmarks and tests ask of a backend besides the forward: the experts a step touched
//! (the bytes it must read), the routing decisions themselves (tests: where two backends route
//! apart, and how close the call was), and the card's ceilings, measured in the same run. Kept
//! out of [`super::Backend`] so the forward's trait holds only the forward's ops.

use anyhow::Result;
use serde::Serialize;
use std::ops::Range;

/// How a forward's routed-expert GEMMs multiply: bf16 weights, fp8 weights widened to bf16
/// (W8A16), or fp8 weights by activations quantized to fp8 per row and 128 columns (W8A8). With
/// fp8 experts the CUDA backend picks by the rows a forward routes (`CudaOptions::fp8_activations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ExpertMath {
    #[serde(rename = "bf16")]
    Bf16,
    W8A16,
    W8A8,
}

impl ExpertMath {
    pub fn name(self) -> &'static str {
        match self {
            ExpertMath::Bf16 => "bf16",
            ExpertMath::W8A16 => "W8A16",
            ExpertMath::W8A8 => "W8A8",
        }
    }
}

/// A backend's CUDA graphs of the step so far (backend/cuda/graph.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GraphSteps {
    /// Step shapes recorded, those since dropped included (each shape's first step ran eagerly,
    /// then was recorded).
    pub recorded: u64,
    /// Steps replayed from a recorded graph.
    pub replayed: u64,
}

/// One MoE layer's routing decisions in one forward (see [`Measure::record_routing`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerRouting {
    /// The layer's index in the model.
    pub layer: usize,
    /// Per row of the forward, its routed experts in pick order (rank order; the shared expert
    /// is not among them).
    pub picks: Vec<Vec<usize>>,
    /// Block routing (LLaDA2.2): per routing block, its rows and its pool in rank order
    /// (largest block score first). Empty for per-token routing.
    pub pools: Vec<BlockPool>,
    /// Per row, the f32 biased scores `sigmoid(logit) + expert_bias` of every expert, the
    /// values the decision ranks (tests compute margins from them). The CPU: its own. CUDA: the
    /// host's sigmoid of the router's f32 logits read back from the device (the kernel's expf
    /// may differ from the host's by an ulp or two).
    pub biased: Vec<Vec<f32>>,
}

/// One routing block's pool of experts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockPool {
    /// The block's rows of the forward.
    pub rows: Range<usize>,
    /// Its `expert_capacity` experts, largest block score first.
    pub experts: Vec<usize>,
}

pub trait Measure {
    /// Count the distinct experts each MoE layer's tokens route to (benchmarks: the bytes a
    /// step must read). Off by default: on a GPU it costs a sync per layer.
    fn count_experts(&mut self, on: bool);
    /// Distinct experts per MoE layer in the last forward, in layer order (empty when off).
    fn experts_touched(&self) -> Vec<usize>;
    /// Record every MoE layer's routing decisions (tests). Off by default: on a GPU it reads the
    /// router's outputs back after each MoE layer (a sync per layer, no CUDA graphs).
    fn record_routing(&mut self, on: bool);
    /// The MoE layers' routing decisions in the last forward, in layer order (empty when off).
    fn routing(&self) -> Vec<LayerRouting>;
    /// MoE layer `layer`'s router bias (`expert_bias`, `[E]`): what training moves to balance
    /// the experts' loads. An error for a dense layer.
    fn expert_bias(&self, layer: usize) -> Result<Vec<f32>>;
    /// Set MoE layer `layer`'s router bias (benchmarks on random weights balance it as training
    /// does: bench::router_balance); every later forward routes by it.
    fn set_expert_bias(&mut self, layer: usize, bias: &[f32]) -> Result<()>;
    /// Device memory bandwidth in bytes/s, measured now (a large device-to-device copy,
    /// counting bytes read plus written): the ceiling a memory-bound step is held to.
    fn measure_copy_bandwidth(&mut self) -> Result<f64>;
    /// The bf16 matrix rate in FLOP/s, measured now, where the backend has matrix units.
    fn matmul_ceiling(&mut self) -> Result<Option<f64>> {
        Ok(None)
    }
    /// Seconds one all-reduce of `floats` f32 values takes across the tensor-parallel ranks,
    /// measured now (None at one rank, or where the backend has no collective to time).
    fn time_all_reduce(&mut self, _floats: usize) -> Result<Option<f64>> {
        Ok(None)
    }
    /// How the MoE layers' routed experts multiply in a forward of `rows` tokens.
    fn expert_math(&self, rows: usize) -> ExpertMath;
    /// The CUDA graphs of the step so far (None: this backend records none).
    fn graph_steps(&self) -> Option<GraphSteps> {
        None
    }
    /// Seconds the host has spent blocked on the device since the last call, which resets the
    /// count (a step's downloads: its picks wait for its forward); None where the backend does
    /// not count them. A step's wall time less this is its host time: the engine's work and the
    /// launches, during which a synchronous step leaves the device idle (`bench step`'s host_ms).
    fn take_device_wait(&mut self) -> Option<f64> {
        None
    }
    /// Time each step's forward on the device from now (`on`) or stop: a timing event on the
    /// stream before its first work and one after its last kernel ([`Measure::take_step_span`]).
    /// Off by default; a backend without a device stream ignores it.
    fn time_step_spans(&mut self, _on: bool) -> Result<()> {
        Ok(())
    }
    /// Seconds from the last step's first work on the device's stream to the end of its last
    /// kernel, once (None when not timing, or no step ran since the last call). A step's wall
    /// time less this is the time the device sat idle for the host outside the forward: the
    /// engine's work before it, and the download, the sync and the engine's work after it.
    fn take_step_span(&mut self) -> Result<Option<f64>> {
        Ok(None)
    }
}
