// bf16 helpers and warp/block reductions; nothing model-specific.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>
#include <float.h>
#include "params.h"

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

// Max over the warp with its index; ties go to the lower index. Every lane gets the result.
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (ov > v || (ov == v && oi < i)) {
            v = ov;
            i = oi;
        }
    }
}

// Inclusive prefix sums of two values over the warp's lanes.
__device__ __forceinline__ void warp_scan2(int& a, int& b) {
    const int lane = threadIdx.x % WARP;
#pragma unroll
    for (int o = 1; o < WARP; o <<= 1) {
        const int x = __shfl_up_sync(0xffffffffu, a, o), y = __shfl_up_sync(0xffffffffu, b, o);
        if (lane >= o) {
            a += x;
            b += y;
        }
    }
}

// Inclusive prefix sum of a float over the warp's lanes (lane order, the same additions on every
// call: callers that compare sums across threads get the same bits).
__device__ __forceinline__ float warp_scan(float v) {
    const int lane = threadIdx.x % WARP;
#pragma unroll
    for (int o = 1; o < WARP; o <<= 1) {
        const float y = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += y;
    }
    return v;
}

// A float's bits as an unsigned key in the same order: a larger float has a larger key; -0 sorts
// below +0, as Rust's total_cmp (the host's order).
__device__ __forceinline__ uint32_t order_key(float x) {
    const uint32_t b = __float_as_uint(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
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

// Sum of exp(l[i] - m) over a row of n floats, the block's B threads striding through it with U
// loads in flight each (a load latency per element binds otherwise); every thread gets the sum.
template <int U, int B>
__device__ __forceinline__ float block_sum_exp(const float* l, int n, float m, float* scratch) {
    float z = 0.f;
    int i0 = threadIdx.x;
    for (; i0 + (U - 1) * B < n; i0 += U * B) {
        float v[U];
#pragma unroll
        for (int u = 0; u < U; u++) v[u] = l[i0 + u * B];
#pragma unroll
        for (int u = 0; u < U; u++) z += expf(v[u] - m);
    }
    for (int i = i0; i < n; i += B) z += expf(l[i] - m);
    return block_sum(z, scratch);
}

__device__ __forceinline__ float silu_f(float x) { return x / (1.f + expf(-x)); }

// KV pool addressing: [page][layer][k|v][page_size][nkv][d]; `pt` is the token's page table.
__device__ __forceinline__ size_t kv_offset(const PagedKv& c, const int32_t* pt, int pos, int kv, int nkv, int h, int d) {
    const int page_size = c.page_size, layer = c.layer, num_layers = c.num_layers;
    int page = pt[pos / page_size], s = pos % page_size;
    return ((((size_t)page * num_layers + layer) * 2 + kv) * page_size + s) * (size_t)nkv * d + (size_t)h * d;
}
