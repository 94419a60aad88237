// What a cluster barrier costs in sample_rows' pattern (session 28): 8-CTA clusters of 256
// threads, 4 CTAs an SM, each round a CTA publishes a value a thread in its shared memory, a
// cluster barrier, every thread reads the value from all 8 ranks (DSMEM), a second barrier.
// Optionally each round first streams `loads` float4s a thread from a 1 GiB buffer, as the
// sampler's passes do between barriers. Modes:
//   0  cg::this_cluster().sync(): arrive.release + wait.acquire (MEMBAR.ALL.GPU ... CCTL.IVALL)
//   1  arrive.relaxed + wait.acquire (no MEMBAR)
//   2  fence.acq_rel.cta (MEMBAR.ALL.CTA) + arrive.relaxed + wait.acquire
// Modes 1 and 2 are not what the memory model promises for DSMEM; this measures only what the
// GPU-scope fence costs. Build: nvcc -O3 -arch=sm_90a fence_bench.cu -o fence_bench
#include <cooperative_groups.h>
#include <cstdio>
#include <cuda_runtime.h>
namespace cg = cooperative_groups;

template <int MODE>
__device__ __forceinline__ void cbar() {
    if constexpr (MODE == 0) {
        cg::this_cluster().sync();
    } else if constexpr (MODE == 1) {
        asm volatile("barrier.cluster.arrive.relaxed.aligned;\n barrier.cluster.wait.aligned;\n" ::: "memory");
    } else {
        asm volatile("fence.acq_rel.cta;\n barrier.cluster.arrive.relaxed.aligned;\n barrier.cluster.wait.aligned;\n" ::: "memory");
    }
}

template <int MODE>
__global__ void __cluster_dims__(8, 1, 1) __launch_bounds__(256, 4)
    rounds(const float4* __restrict__ buf, size_t n4, float* out, int iters, int loads) {
    __shared__ float part[256];
    __shared__ float pad[10000];  // about the sampler's 42 KB, so that 4 CTAs share an SM
    cg::cluster_group cluster = cg::this_cluster();
    pad[threadIdx.x] = 0.f;
    float acc = 0.f;
    size_t at = ((size_t)blockIdx.x * 256 + threadIdx.x) * 4;
    for (int it = 0; it < iters; it++) {
        for (int j = 0; j < loads; j += 4) {
            float4 v[4];
#pragma unroll
            for (int u = 0; u < 4; u++) v[u] = buf[(at + u) % n4];
#pragma unroll
            for (int u = 0; u < 4; u++) acc += v[u].x + v[u].y + v[u].z + v[u].w;
            at += (size_t)gridDim.x * 256 * 4;
        }
        part[threadIdx.x] = acc;
        cbar<MODE>();
        float s = 0.f;
#pragma unroll
        for (int r = 0; r < 8; r++) s += *cluster.map_shared_rank(&part[threadIdx.x], r);
        acc += s * 1e-3f;
        cbar<MODE>();
    }
    out[(size_t)blockIdx.x * 256 + threadIdx.x] = acc + pad[(threadIdx.x + 1) % 256];
}

template <int MODE>
float time_mode(const float4* buf, size_t n4, float* out, int clusters, int iters, int loads) {
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    rounds<MODE><<<clusters * 8, 256>>>(buf, n4, out, iters, loads);  // warm
    cudaEventRecord(a);
    for (int r = 0; r < 10; r++) rounds<MODE><<<clusters * 8, 256>>>(buf, n4, out, iters, loads);
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0.f;
    cudaEventElapsedTime(&ms, a, b);
    return ms / 10.f;
}

#define CHECK(x)                                                                    \
    do {                                                                            \
        cudaError_t e_ = (x);                                                       \
        if (e_ != cudaSuccess) {                                                    \
            printf("%s: %s\n", #x, cudaGetErrorString(e_));                         \
            return 1;                                                               \
        }                                                                           \
    } while (0)

int main() {
    setvbuf(stdout, nullptr, _IONBF, 0);
    int n = 0;
    CHECK(cudaGetDeviceCount(&n));
    printf("devices %d\n", n);
    const size_t n4 = (1ull << 30) / 16;
    float4* buf;
    float* out;
    const int clusters = 2048;
    CHECK(cudaMalloc(&buf, n4 * 16));
    CHECK(cudaMalloc(&out, (size_t)clusters * 8 * 256 * 4));
    CHECK(cudaMemset(buf, 0, n4 * 16));
    CHECK(cudaDeviceSynchronize());
    printf("clusters %d of 8 CTAs x 256 threads; ms a launch (mean of 10)\n", clusters);
    printf("%6s %6s %12s %12s %12s\n", "iters", "loads", "release/acq", "relaxed", "fence.cta");
    const int cfg[][2] = {{1, 0}, {8, 0}, {16, 0}, {8, 16}, {8, 64}};
    for (auto& c : cfg) {
        float t0 = time_mode<0>(buf, n4, out, clusters, c[0], c[1]);
        float t1 = time_mode<1>(buf, n4, out, clusters, c[0], c[1]);
        float t2 = time_mode<2>(buf, n4, out, clusters, c[0], c[1]);
        printf("%6d %6d %12.4f %12.4f %12.4f\n", c[0], c[1], t0, t1, t2);
        CHECK(cudaGetLastError());
    }
    cudaError_t e = cudaDeviceSynchronize();
    printf("%s\n", cudaGetErrorString(e));
    return e != cudaSuccess;
}
