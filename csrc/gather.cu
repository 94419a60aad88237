// Row gathers: the embedding lookup (bf16 table -> f32 residual) and picking rows of an f32
// activation (the rows whose predictions are needed).
#include "common.cuh"

// Each thread loads GATHER_UNROLL columns before it stores any: a plain loop waited one load
// latency per column (the stores may alias the source as far as the compiler knows), ~9 us a
// call for 32 rows of 4096 columns.
#define GATHER_UNROLL 16

extern "C" __global__ void embed_gather(const EmbedParams p) {
    int r = blockIdx.x;
    uint32_t t = p.tokens[r];
    if (t >= (uint32_t)p.vocab) t = 0;  // validated on the host; never read out of bounds
    const bf16* src = p.table + (size_t)t * p.cols;
    float* dst = p.out + (size_t)r * p.cols;
    for (int c0 = threadIdx.x; c0 < p.cols; c0 += GATHER_UNROLL * blockDim.x) {
        float v[GATHER_UNROLL];
#pragma unroll
        for (int u = 0; u < GATHER_UNROLL; u++) {
            const int c = c0 + u * blockDim.x;
            v[u] = c < p.cols ? bf2f(src[c]) : 0.f;
        }
#pragma unroll
        for (int u = 0; u < GATHER_UNROLL; u++) {
            const int c = c0 + u * blockDim.x;
            if (c < p.cols) dst[c] = v[u];
        }
    }
}

extern "C" __global__ void gather_rows(const GatherParams p) {
    int i = blockIdx.x;
    const float* src = p.src + (size_t)p.rows[i] * p.cols;
    float* dst = p.out + (size_t)i * p.cols;
    for (int c0 = threadIdx.x; c0 < p.cols; c0 += GATHER_UNROLL * blockDim.x) {
        float v[GATHER_UNROLL];
#pragma unroll
        for (int u = 0; u < GATHER_UNROLL; u++) {
            const int c = c0 + u * blockDim.x;
            v[u] = c < p.cols ? src[c] : 0.f;
        }
#pragma unroll
        for (int u = 0; u < GATHER_UNROLL; u++) {
            const int c = c0 + u * blockDim.x;
            if (c < p.cols) dst[c] = v[u];
        }
    }
}
