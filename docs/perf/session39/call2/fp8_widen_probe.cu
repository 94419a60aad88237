// Session 39 probe: moe_gemm.cu's fp8x2_to_bf16x2 (the register tiles' widening) over every
// pair of e4m3 codes, for fp8_widen_probe.py to compare with torch's e4m3 -> bf16 conversion.
// Built here: nvcc -cubin -arch=sm_90a -I csrc -o .carry/fp8_widen_probe.cubin <this file>.
#include "moe_gemm.cu"

extern "C" __global__ void fp8_widen_probe(uint32_t* out) {
    const uint32_t pair = blockIdx.x * blockDim.x + threadIdx.x;  // 65,536 threads
    out[pair] = fp8x2_to_bf16x2(pair);
}
