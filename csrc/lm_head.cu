// The pick after lm_head: per row, argmax (ties: lowest id) and its softmax probability
// 1 / sum(exp(l - max)). The logits come from a cuBLAS GEMM into a scratch buffer (a first
// step: a fused GEMM + row-reduce would never write them). CPU twin: backend::cpu::pick_row.
#include "common.cuh"

// One pass over the row: each thread keeps its running max, its index and its sum of
// exp(l - running max), rescaled when the max grows (an online softmax); the block then
// combines the threads' (max, index, sum). Two passes (argmax, then the sum against the max)
// read the row twice from memory at batch 64: 2,048 rows of 629 KB leave L2 between them.
// Each thread sees its elements in increasing order, so ties go to the lowest id.
extern "C" __global__ void __launch_bounds__(PICK_THREADS) row_argmax(const PickParams p) {
    constexpr int U = PICK_UNROLL, B = PICK_THREADS, NW = PICK_THREADS / WARP;
    __shared__ float sm[NW], sz[NW];
    __shared__ int si[NW];
    const float* l = p.logits + (size_t)blockIdx.x * p.vocab;
    float best = -FLT_MAX, z = 0.f;
    int bi = 0x7fffffff;
    const auto take = [&](float v, int i) {
        if (v > best) {
            z = z * expf(best - v) + 1.f;
            best = v;
            bi = i;
        } else {
            z += expf(v - best);
        }
    };
    // PICK_UNROLL loads in flight a thread before they are used (one at a time, the loop
    // waited a memory latency per element).
    int i0 = threadIdx.x;
    for (; i0 + (U - 1) * B < p.vocab; i0 += U * B) {
        float v[U];
#pragma unroll
        for (int u = 0; u < U; u++) v[u] = l[i0 + u * B];
#pragma unroll
        for (int u = 0; u < U; u++) take(v[u], i0 + u * B);
    }
    for (int i = i0; i < p.vocab; i += B) take(l[i], i);
    // Combine: the warp's max and index, then each lane's sum moved onto that max.
    float m = best;
    int mi = bi;
    warp_argmax(m, mi);
    z = warp_sum(z * expf(best - m));
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    if (lane == 0) {
        sm[w] = m;
        si[w] = mi;
        sz[w] = z;
    }
    __syncthreads();
    if (w != 0) return;
    best = lane < NW ? sm[lane] : -FLT_MAX;
    bi = lane < NW ? si[lane] : 0x7fffffff;
    z = lane < NW ? sz[lane] : 0.f;
    m = best;
    mi = bi;
    warp_argmax(m, mi);
    z = warp_sum(z * expf(best - m));
    const int arg = mi;
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
