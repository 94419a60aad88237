// quantize_fp8: bf16 weights -> block FP8 (e4m3 codes + one f32 scale_inv per 128x128 block),
// at load (`--quantization fp8`: each expert is uploaded into a staging buffer and quantized
// here, so no second copy is made in host memory). Grid: (column blocks, row blocks, matrices);
// one CTA per block. The rules are src/fp8.rs's (its CPU twin, matched bit for bit):
// scale_inv = amax / 448 (1 for an all-zero block), code = e4m3_satfinite_rne(x / scale_inv).
#include "common.cuh"
#include <cuda_fp8.h>

// The rules both kernels share (src/fp8.rs's block_scale and f32_to_e4m3): a block's or group's
// scale from its amax (IEEE division, nvcc's default -prec-div=true, as on the host; 1 for an
// all-zero one), and a value's code under that scale.
__device__ __forceinline__ float fp8_scale(float amax) { return amax > 0.f ? amax / FP8_MAX : 1.f; }
__device__ __forceinline__ uint8_t fp8_code(float x, float scale) { return __nv_cvt_float_to_fp8(x / scale, __NV_SATFINITE, __NV_E4M3); }

extern "C" __global__ void __launch_bounds__(QUANT_THREADS) quantize_fp8(const QuantizeFp8Params p) {
    const size_t mat = blockIdx.z, numel = (size_t)p.rows * p.cols;
    const int r0 = blockIdx.y * FP8_BLOCK, c0 = blockIdx.x * FP8_BLOCK;
    const int rn = min(FP8_BLOCK, p.rows - r0), cn = min(FP8_BLOCK, p.cols - c0);
    const bf16* src = p.src + mat * numel;
    uint8_t* codes = p.codes + mat * numel;
    // fmaxf drops a NaN (as the host's f32::max does): it encodes to NaN below, not the scale.
    float amax = 0.f;
    for (int i = threadIdx.x; i < rn * cn; i += QUANT_THREADS) {
        amax = fmaxf(amax, fabsf(bf2f(src[(size_t)(r0 + i / cn) * p.cols + c0 + i % cn])));
    }
    __shared__ float warp_amax[QUANT_THREADS / WARP];
    amax = warp_max(amax);
    if (threadIdx.x % WARP == 0) warp_amax[threadIdx.x / WARP] = amax;
    __syncthreads();
    amax = 0.f;
#pragma unroll
    for (int w = 0; w < QUANT_THREADS / WARP; w++) amax = fmaxf(amax, warp_amax[w]);
    const float s = fp8_scale(amax);
    if (threadIdx.x == 0) {
        const int sc = (p.cols + FP8_BLOCK - 1) / FP8_BLOCK, sr = (p.rows + FP8_BLOCK - 1) / FP8_BLOCK;
        p.scale_inv[mat * sr * sc + blockIdx.y * sc + blockIdx.x] = s;
    }
    for (int i = threadIdx.x; i < rn * cn; i += QUANT_THREADS) {
        const size_t at = (size_t)(r0 + i / cn) * p.cols + c0 + i % cn;
        codes[at] = fp8_code(bf2f(src[at]), s);
    }
}

// quantize_rows_fp8: activations -> e4m3 codes and one scale a row and group of FP8_BLOCK columns
// (the W8A8 expert tiles' x: CudaOptions::fp8_activations). The weights' rules over 1 x 128 groups
// (src/fp8.rs quantize_rows, matched bit for bit): scale = amax / 448 (1 for an all-zero group),
// code = e4m3_satfinite_rne(x / scale). Warp w of CTA b takes group (b * QUANT_ROWS_WARPS + w) of
// the rows' groups, row-major; lane l its columns l, l + 32, l + 64, l + 96.
extern "C" __global__ void __launch_bounds__(QUANT_ROWS_WARPS * WARP) quantize_rows_fp8(const QuantizeRowsParams p) {
    const int groups = (p.cols + FP8_BLOCK - 1) / FP8_BLOCK, lane = threadIdx.x % WARP;
    const long gi = (long)blockIdx.x * QUANT_ROWS_WARPS + threadIdx.x / WARP;
    if (gi >= (long)p.rows * groups) return;
    const int row = gi / groups, c0 = (gi % groups) * FP8_BLOCK;
    const bf16* src = p.src + (size_t)row * p.cols;
    float v[FP8_BLOCK / WARP];
    float amax = 0.f;
#pragma unroll
    for (int j = 0; j < FP8_BLOCK / WARP; j++) {
        const int c = c0 + lane + WARP * j;
        v[j] = c < p.cols ? bf2f(src[c]) : 0.f;
        amax = fmaxf(amax, fabsf(v[j]));  // fmaxf drops a NaN, as the host's f32::max does
    }
    amax = warp_max(amax);
    const float s = fp8_scale(amax);
    if (lane == 0) p.scale[gi] = s;
#pragma unroll
    for (int j = 0; j < FP8_BLOCK / WARP; j++) {
        const int c = c0 + lane + WARP * j;
        if (c < p.cols) p.codes[(size_t)row * p.cols + c] = fp8_code(v[j], s);
    }
}
