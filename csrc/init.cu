// init_normal: random weights made on the device (benchmark shapes that cannot be shipped):
// out[i] = mean + std * N(0,1), Box-Muller over a counter-based SplitMix64 draw of (seed, i).
// spin_wait: holds the stream for `us` microseconds (kernel profiling: the host queues a whole
// forward behind it, so the per-kernel event times hold no launch gaps).
#include "common.cuh"

__device__ __forceinline__ uint64_t splitmix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

extern "C" __global__ void init_normal(const InitParams p) {
    uint64_t n = ((uint64_t)p.n_hi << 32) | p.n_lo, seed = ((uint64_t)p.seed_hi << 32) | p.seed_lo;
    uint64_t offset = ((uint64_t)p.offset_hi << 32) | p.offset_lo;
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x) {
        uint64_t g = offset + (p.local_cols ? (i / p.local_cols) * p.global_cols + p.col0 + i % p.local_cols : i);
        uint64_t a = splitmix(seed ^ (2 * g)), b = splitmix(seed ^ (2 * g + 1) ^ 0x5851F42D4C957F2Dull);
        float u = ((a >> 40) + 0.5f) / 16777216.f, v = ((b >> 40) + 0.5f) / 16777216.f;
        float x = p.mean + p.std * sqrtf(-2.f * logf(u)) * cospif(2.f * v);
        if (p.out_bf16) p.out_bf16[i] = f2bf(x);
        else p.out_f32[i] = x;
    }
}

extern "C" __global__ void spin_wait(const SpinParams p) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        __nanosleep(1000);
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < 1000ull * p.us);
}
