// LowConfidence unmasking on the device, one CTA per request block (block <= 1024):
// if at least min(quota, masked) masked positions have p > threshold, all of those;
// else the min(quota, masked) most confident (ties: lower position).
// CPU twin: decode::policy::low_confidence.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(UNMASK_MAX_BLOCK) unmask_low_confidence(const UnmaskParams p) {
    __shared__ int n_masked, n_high;
    int r = blockIdx.x, i = threadIdx.x;
    const float* prob = p.prob + (size_t)r * p.block;
    const int32_t* masked = p.masked + (size_t)r * p.block;
    if (i == 0) {
        n_masked = 0;
        n_high = 0;
    }
    __syncthreads();
    bool m = i < p.block && masked[i];
    float pi = m ? prob[i] : 0.f;
    if (m) {
        atomicAdd(&n_masked, 1);
        if (pi > p.threshold) atomicAdd(&n_high, 1);
    }
    __syncthreads();
    int quota = min(p.quota[r], n_masked);
    bool take = false;
    if (m) {
        if (n_high >= quota) {
            take = pi > p.threshold;
        } else {
            int rank = 0;
            for (int j = 0; j < p.block; j++) {
                if (!masked[j] || j == i) continue;
                float pj = prob[j];
                rank += pj > pi || (pj == pi && j < i);
            }
            take = rank < quota;
        }
    }
    if (i < p.block) p.chosen[(size_t)r * p.block + i] = take;
}
