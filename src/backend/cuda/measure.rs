//! The CUDA backend's benchmark probes: experts touched, routing decisions (tests), and the copy-bandwidth and bf16 GEMM
//! ceilings measured on the card in hand (benchmarks report against them).

use super::error::CudaError;
use super::kernels::{params::InitParams, Kernel};
use super::weights::Ffn;
use super::CudaBackend;
use crate::backend::{ExpertMath, GraphSteps, LayerRouting, Measure};
use anyhow::{bail, Result};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaSlice};

/// Two timing events around a step's forward on the backend's stream (Measure::time_step_spans).
pub(super) struct StepEvents {
    start: CudaEvent,
    end: CudaEvent,
    /// Both recorded for a step whose span was not yet taken.
    recorded: std::cell::Cell<bool>,
}

impl CudaBackend {
    /// Before a step's first work on the stream (its inputs' copy): its span's start, when
    /// spans are timed.
    pub(super) fn mark_step_start(&self) -> Result<()> {
        let Some(e) = &self.step_events else { return Ok(()) };
        e.recorded.set(false);
        e.start.record(&self.k.stream).map_err(CudaError::driver(|| "recording a step's start event".into()))?;
        Ok(())
    }

    /// After a step's forward was issued: its span's end, after its last kernel.
    pub(super) fn mark_step_end(&self) -> Result<()> {
        let Some(e) = &self.step_events else { return Ok(()) };
        e.end.record(&self.k.stream).map_err(CudaError::driver(|| "recording a step's end event".into()))?;
        e.recorded.set(true);
        Ok(())
    }

    /// TFLOP/s of a large bf16 GEMM through the same cuBLAS path the backend uses (f32 output),
    /// random operands, best of 10 after a warm-up.
    pub fn measure_gemm_tflops(&self) -> Result<f64> {
        let (m, n, k) = (8192usize, 8192usize, 8192usize);
        let x = self.k.alloc::<u16>(m * k, "GEMM probe A")?;
        let w = self.k.alloc::<u16>(n * k, "GEMM probe B")?;
        let y = self.k.alloc::<f32>(m * n, "GEMM probe C")?;
        for (i, buf, len) in [(1u32, &x, m * k), (2, &w, n * k)] {
            let p = InitParams {
                out_bf16: self.p(buf),
                n_lo: len as u32,
                n_hi: (len as u64 >> 32) as u32,
                seed_lo: 0x5eed + i,
                std: 1.0,
                ..Default::default()
            };
            self.k.launch_grid_stride(Kernel::InitNormal, len, &p)?;
        }
        let run = || self.k.gemm_bf16_f32("GEMM probe", self.p(&x), self.p(&w), self.p(&y), m, n, k, 0.0);
        run()?;
        self.k.sync("GEMM probe warm-up")?;
        let mut best = f64::MAX;
        for _ in 0..10 {
            let t = std::time::Instant::now();
            run()?;
            self.k.sync("GEMM probe")?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(2.0 * (m * n * k) as f64 / best / 1e12)
    }
}

impl Measure for CudaBackend {
    fn count_experts(&mut self, on: bool) {
        *self.touched.get_mut() = on.then(Vec::new);
    }

    fn experts_touched(&self) -> Vec<usize> {
        self.touched.borrow().clone().unwrap_or_default()
    }

    fn record_routing(&mut self, on: bool) {
        *self.routing.get_mut() = on.then(Vec::new);
    }

    fn routing(&self) -> Vec<LayerRouting> {
        self.routing.borrow().clone().unwrap_or_default()
    }

    fn expert_bias(&self, layer: usize) -> Result<Vec<f32>> {
        match self.w.layers.get(layer).map(|l| &l.ffn) {
            Some(Ffn::Moe(m)) => Ok(self.download(&m.bias, "the router's expert bias")?),
            _ => bail!("layer {layer} is not a MoE layer"),
        }
    }

    fn set_expert_bias(&mut self, layer: usize, bias: &[f32]) -> Result<()> {
        let Some(Ffn::Moe(m)) = self.w.layers.get_mut(layer).map(|l| &mut l.ffn) else {
            bail!("layer {layer} is not a MoE layer");
        };
        if m.bias.len() != bias.len() {
            bail!("layer {layer}: expert_bias has {} values, got {}", m.bias.len(), bias.len());
        }
        // Into the same buffer: recorded CUDA graphs read it where they were recorded.
        self.k.stream.memcpy_htod(bias, &mut m.bias).map_err(CudaError::driver(|| format!("setting layer {layer}'s expert bias")))?;
        Ok(self.k.sync("setting the expert bias")?)
    }

    fn matmul_ceiling(&mut self) -> Result<Option<f64>> {
        Ok(Some(self.measure_gemm_tflops()? * 1e12))
    }

    fn time_all_reduce(&mut self, floats: usize) -> Result<Option<f64>> {
        self.time_all_reduce_s(floats)
    }

    fn graph_steps(&self) -> Option<GraphSteps> {
        self.graph_steps_total()
    }

    fn time_step_spans(&mut self, on: bool) -> Result<()> {
        self.step_events = None;
        if on {
            let ctx = self.k.stream.context();
            let event = || {
                ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(CudaError::driver(|| "creating a step's timing events".into()))
            };
            self.step_events = Some(StepEvents { start: event()?, end: event()?, recorded: Default::default() });
        }
        Ok(())
    }

    fn take_step_span(&mut self) -> Result<Option<f64>> {
        let Some(e) = &self.step_events else { return Ok(None) };
        if !e.recorded.replace(false) {
            return Ok(None);
        }
        let ms = e.start.elapsed_ms(&e.end).map_err(CudaError::driver(|| "timing a step's span".into()))?;
        Ok(Some(f64::from(ms) / 1e3))
    }

    fn take_device_wait(&mut self) -> Option<f64> {
        Some(self.device_wait.replace(0.0))
    }

    fn expert_math(&self, rows: usize) -> ExpertMath {
        if !self.cfg.fp8_experts() {
            ExpertMath::Bf16
        } else if self.w8a8_experts_at(rows) {
            ExpertMath::W8A8
        } else {
            ExpertMath::W8A16
        }
    }

    /// A 1 GiB device-to-device copy, best of 10, bytes read plus written.
    fn measure_copy_bandwidth(&mut self) -> Result<f64> {
        let n = 1usize << 29; // u16 elements: 1 GiB
        let src = self.k.alloc::<u16>(n, "bandwidth probe source")?;
        let mut dst = self.k.alloc::<u16>(n, "bandwidth probe destination")?;
        let copy =
            |dst: &mut CudaSlice<u16>| self.k.stream.memcpy_dtod(&src, dst).map_err(CudaError::driver(|| "bandwidth probe copy".into()));
        copy(&mut dst)?;
        self.k.sync("bandwidth probe warm-up")?;
        let mut best = f64::MAX;
        for _ in 0..10 {
            let t = std::time::Instant::now();
            copy(&mut dst)?;
            self.k.sync("bandwidth probe")?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(2.0 * (n * 2) as f64 / best)
    }
}
