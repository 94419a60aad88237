// The gated activation of the dense MLP and the shared expert (their GEMMs are cuBLAS):
// out = bf16(silu(gate) * up), gate and up side by side in one f32 row of width 2*inter.
#include "common.cuh"

// Four columns a thread when inter is a multiple of 4 (16-byte loads of gate and up, 32-bit
// index math): element by element with 64-bit divisions it took ~11 us a call for batch 64's
// 2048 rows of the shared expert. Same arithmetic per element either way.
extern "C" __global__ void silu_mul(const SiluMulParams p) {
    if (p.inter % 4 == 0) {
        const int quads = p.inter / 4, n = p.rows * quads;  // < 2^31: rows x inter is an activation's size
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
            const int r = i / quads, c = (i % quads) * 4;
            const float* row = p.gu + (size_t)r * 2 * p.inter;
            const float4 g = *reinterpret_cast<const float4*>(row + c);
            const float4 u = *reinterpret_cast<const float4*>(row + p.inter + c);
            __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(p.out + (size_t)r * p.inter + c);
            o[0] = __floats2bfloat162_rn(silu_f(g.x) * u.x, silu_f(g.y) * u.y);
            o[1] = __floats2bfloat162_rn(silu_f(g.z) * u.z, silu_f(g.w) * u.w);
        }
        return;
    }
    size_t n = (size_t)p.rows * p.inter;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / p.inter, j = i % p.inter;
        const float* row = p.gu + r * 2 * p.inter;
        p.out[i] = f2bf(silu_f(row[j]) * row[p.inter + j]);
    }
}
