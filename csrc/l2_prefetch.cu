// l2_prefetch: bulk prefetches of device ranges into L2, fire and forget (HOPPER_ONLY: the bulk
// prefetch is sm_90). Launched on the side stream at a MoE layer's input norm (CudaOptions::
// l2_prefetch), it asks for weights the layer reads after its latency-bound attention chain (the
// output projection, the router, the shared expert; the QKV projection's before the norm), and
// for the gate and up matrices of the experts the router picks over the layer's attention input
// (a prediction of the picks over its post-attention rows), while DRAM is mostly idle; the GEMMs
// then read them from L2. A hint only: nothing waits for it and no result depends on it.
#include "common.cuh"

// Chunk c of the prefetch (counted over the fixed ranges in order, then each chosen expert's
// gate and up) goes to CTA c % CTAs: consecutive chunks start from different SMs' copy engines.
extern "C" __global__ void __launch_bounds__(L2_PREFETCH_THREADS) l2_prefetch(const L2PrefetchParams p) {
    __shared__ uint32_t picked[L2_PREFETCH_MAX_E / WARP];
    __shared__ int chosen[L2_PREFETCH_MAX_E];
    const uint64_t ctas = gridDim.x, stride = ctas * blockDim.x;
    const uint64_t me = blockIdx.x + ctas * threadIdx.x;
    uint64_t first = 0;  // the first chunk number of the next range
    const auto range = [&](uint64_t addr, uint64_t bytes) {
        const uint64_t chunks = (bytes + L2_PREFETCH_CHUNK - 1) / L2_PREFETCH_CHUNK;
        // This thread's first chunk of the range: the smallest c >= first with c % stride == me.
        for (uint64_t c = first + (me + stride - first % stride) % stride; c < first + chunks; c += stride) {
            const uint64_t off = (c - first) * L2_PREFETCH_CHUNK;
            const uint32_t n = (uint32_t)min((uint64_t)L2_PREFETCH_CHUNK, bytes - off);
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(addr + off), "r"(n) : "memory");
        }
        first += chunks;
    };
#pragma unroll
    for (int r = 0; r < L2_PREFETCH_RANGES; r++) range(p.addr[r], p.bytes[r]);
    if (p.ids == nullptr) return;
    // The picked experts as a bitmap, then listed in increasing id (every CTA the same list).
    const int lane = threadIdx.x, words = (p.experts + WARP - 1) / WARP;
    if (lane < words) picked[lane] = 0;
    __syncwarp();
    for (int i = lane; i < p.picks; i += WARP) {
        const int e = p.ids[i];
        if (e >= 0 && e < p.experts) atomicOr(&picked[e / WARP], 1u << (e % WARP));
    }
    __syncwarp();
    const uint32_t bits = lane < words ? picked[lane] : 0u;
    const int n = __popc(bits);
    int at = n;  // inclusive prefix over the lanes, then exclusive
#pragma unroll
    for (int o = 1; o < WARP; o <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, at, o);
        if (lane >= o) at += v;
    }
    const int total = __shfl_sync(0xffffffffu, at, WARP - 1);
    at -= n;
    for (uint32_t b = bits; b != 0; b &= b - 1) chosen[at++] = lane * WARP + __ffs(b) - 1;
    __syncwarp();
    for (int i = 0; i < min(total, p.max_experts); i++) {
        const uint64_t e = chosen[i];
        range(p.gate + e * p.expert_bytes, p.expert_bytes);
        range(p.up + e * p.expert_bytes, p.expert_bytes);
    }
}
