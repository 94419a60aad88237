// The gated activation of the dense MLP and the shared expert (their GEMMs are cuBLAS):
// out = bf16(silu(gate) * up), gate and up side by side in one f32 row of width 2*inter.
#include "common.cuh"

extern "C" __global__ void silu_mul(const SiluMulParams p) {
    size_t n = (size_t)p.rows * p.inter;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / p.inter, j = i % p.inter;
        const float* row = p.gu + r * 2 * p.inter;
        p.out[i] = f2bf(silu_f(row[j]) * row[p.inter + j]);
    }
}
