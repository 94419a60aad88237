//! What benchmarks ask of a backend besides the forward: the experts a step touched (the bytes
//! it must read) and the card's ceilings, measured in the same run. Kept out of [`super::Backend`]
//! so the forward's trait holds only the forward's ops.

use anyhow::Result;

pub trait Measure {
    /// Count the distinct experts each MoE layer's tokens route to (benchmarks: the bytes a
    /// step must read). Off by default: on a GPU it costs a sync per layer.
    fn count_experts(&mut self, on: bool);
    /// Distinct experts per MoE layer in the last forward, in layer order (empty when off).
    fn experts_touched(&self) -> Vec<usize>;
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
}
