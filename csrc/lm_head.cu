// The pick after lm_head: per row, argmax (ties: lowest id) and its softmax probability
// 1 / sum(exp(l - max)). The logits come from a cuBLAS GEMM into a scratch buffer (a first
// step: a fused GEMM + row-reduce would never write them). CPU twin: backend::cpu::pick_row.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(PICK_THREADS) row_argmax(const PickParams p) {
    __shared__ float sm[PICK_THREADS / WARP];
    __shared__ int si[PICK_THREADS / WARP];
    __shared__ float scratch[32];
    const float* l = p.logits + (size_t)blockIdx.x * p.vocab;
    float best = -FLT_MAX;
    int bi = 0x7fffffff;
    // PICK_UNROLL loads in flight a thread before they are compared (one at a time, the loop
    // waited a memory latency per element: ~175 us for 32 rows of mini's vocabulary). Each
    // thread still sees its elements in increasing order, so ties and sums are as before.
    constexpr int U = PICK_UNROLL, B = PICK_THREADS;
    int i0 = threadIdx.x;
    for (; i0 + (U - 1) * B < p.vocab; i0 += U * B) {
        float v[U];
#pragma unroll
        for (int u = 0; u < U; u++) v[u] = l[i0 + u * B];
#pragma unroll
        for (int u = 0; u < U; u++)
            if (v[u] > best) {
                best = v[u];
                bi = i0 + u * B;
            }
    }
    for (int i = i0; i < p.vocab; i += B) {
        float v = l[i];
        if (v > best) {
            best = v;
            bi = i;
        }
    }
    warp_argmax(best, bi);
    int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    if (lane == 0) {
        sm[w] = best;
        si[w] = bi;
    }
    __syncthreads();
    if (w == 0) {
        best = lane < PICK_THREADS / WARP ? sm[lane] : -FLT_MAX;
        bi = lane < PICK_THREADS / WARP ? si[lane] : 0x7fffffff;
        warp_argmax(best, bi);
        if (lane == 0) {
            sm[0] = best;
            si[0] = bi;
        }
    }
    __syncthreads();
    float m = sm[0];
    int arg = si[0];
    const float z = block_sum_exp<U, B>(l, p.vocab, m, scratch);
    if (threadIdx.x == 0) {
        p.token[blockIdx.x] = (uint32_t)arg;
        p.prob[blockIdx.x] = 1.f / z;
        if (p.share) {
            // The token id as a float is exact below 2^24 (vocabularies are far smaller).
            float* s = p.share + 3 * (size_t)blockIdx.x;
            s[0] = m;
            s[1] = (float)(p.token_base + arg);
            s[2] = z;
        }
    }
}
