// Row gathers: the embedding lookup (bf16 table -> f32 residual) and picking rows of an f32
// activation (the rows whose predictions are needed).
#include "common.cuh"

extern "C" __global__ void embed_gather(const EmbedParams p) {
    int r = blockIdx.x;
    uint32_t t = p.tokens[r];
    if (t >= (uint32_t)p.vocab) t = 0;  // validated on the host; never read out of bounds
    const bf16* src = p.table + (size_t)t * p.cols;
    float* dst = p.out + (size_t)r * p.cols;
    for (int c = threadIdx.x; c < p.cols; c += blockDim.x) dst[c] = bf2f(src[c]);
}

extern "C" __global__ void gather_rows(const GatherParams p) {
    int i = blockIdx.x;
    const float* src = p.src + (size_t)p.rows[i] * p.cols;
    float* dst = p.out + (size_t)i * p.cols;
    for (int c = threadIdx.x; c < p.cols; c += blockDim.x) dst[c] = src[c];
}
