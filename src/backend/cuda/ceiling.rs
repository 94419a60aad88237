//! The bf16 matrix ceiling, measured on the card in hand (benchmarks report against it).

use super::kernels::{params::InitParams, Kernel};
use super::CudaBackend;
use anyhow::Result;

impl CudaBackend {
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
            self.k.launch(Kernel::InitNormal, (len.div_ceil(256).min(65536) as u32, 1, 1), 256, &p)?;
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
