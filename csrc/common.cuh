// bf16 helpers and warp/block reductions; nothing model-specific.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>
#include <float.h>
#include "params.h"

#define WARP 32

__device__ __forceinline__ float bf2f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 f2bf(float x) { return __float2bfloat16(x); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block; every thread gets the result. `scratch` holds >= 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = (blockDim.x + WARP - 1) / WARP;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[w] = v;
    __syncthreads();
    float t = lane < nw ? scratch[lane] : 0.f;
    return warp_sum(t);
}

// 16-byte vector of 8 bf16.
struct __align__(16) bf16x8 {
    __nv_bfloat162 v[4];
};

__device__ __forceinline__ void bf16x8_to_f32(const bf16x8& p, float* f) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(p.v[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

__device__ __forceinline__ float silu_f(float x) { return x / (1.f + expf(-x)); }

// KV pool addressing: [page][layer][k|v][page_size][nkv][d].
__device__ __forceinline__ size_t kv_offset(const int32_t* pt, int pos, int layer, int num_layers, int kv, int page_size,
                                            int nkv, int h, int d) {
    int page = pt[pos / page_size], s = pos % page_size;
    return ((((size_t)page * num_layers + layer) * 2 + kv) * page_size + s) * (size_t)nkv * d + (size_t)h * d;
}
