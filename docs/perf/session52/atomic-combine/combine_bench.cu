// Session 52: what would the MoE combine cost if down added its slot outputs into an f32 row per
// token (red.global.add.v2.f32, the sum held in the L2) instead of writing bf16 slot rows that
// add_moe_rms_norm reads back? A stand-in for down, not the kernel: each CTA streams an expert's
// weight bytes (2 MB, mini's 2048 x 512 bf16; the DRAM-bound part) and then emits its item's
// rows' outputs (values made in registers) either way; then the combine reads them back.
//   store:  slot_out[slot][col] = bf16 pairs;       combine: out[t] = sum of t's 8 slot rows
//   red:    acc[token(slot)][col] += f32 pairs;     combine: out[t] = acc[t], acc[t] = 0
// Batch 64 and 128 at block 32 (2,048 / 4,096 tokens, 8 picks each, 256 experts).
// Build: nvcc -O3 -arch=sm_90a -o combine_bench combine_bench.cu
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <algorithm>
#include <random>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); exit(1); } } while (0)
constexpr int N = 2048, K = 512, E = 256, TOPK = 8, THREADS = 256;

__device__ __forceinline__ void red2(float* p, float a, float b) {
    asm volatile("red.relaxed.gpu.global.add.v2.f32 [%0], {%1, %2};" ::"l"(p), "f"(a), "f"(b) : "memory");
}

// mode 0: store bf16 slot rows; 1: red f32 pairs into acc; 2: weights only (no outputs).
// A CTA is an expert's item: its weight bytes streamed in as many chunks as it has rows, each
// chunk followed by one row's outputs, so outputs interleave with the weight stream as down's
// epilogues do with other CTAs' loads.
template <int MODE>
__global__ void __launch_bounds__(THREADS) down_sim(const uint4* w, const int* item_start, const int* slot_token,
                                                    __nv_bfloat16* slot_out, float* acc, float* sink) {
    constexpr int VECS = N * K * 2 / 16;  // 16-byte loads of an expert's weights
    const int e = blockIdx.x;
    const uint4* we = w + (size_t)e * VECS;
    const int s0 = item_start[e], s1 = item_start[e + 1], rows = max(s1 - s0, 1);
    float s = 0.f;
    for (int r = 0; r < rows; r++) {
        const int v0 = (int)((long long)VECS * r / rows), v1 = (int)((long long)VECS * (r + 1) / rows);
        for (int i = v0 + threadIdx.x; i < v1; i += THREADS * 4) {
            uint4 v[4];
#pragma unroll
            for (int j = 0; j < 4; j++) v[j] = i + j * THREADS < v1 ? we[i + j * THREADS] : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int j = 0; j < 4; j++) s += __uint_as_float(v[j].x & 0x3fffffff) + __uint_as_float(v[j].w & 0x3fffffff);
        }
        if (MODE == 2 || s0 + r >= s1) continue;
        const int slot = s0 + r, t = slot_token[slot];
        for (int c = threadIdx.x * 2; c < N; c += THREADS * 2) {
            const float a = s * 1e-30f + (slot & 7) * 0.25f + c * 1e-4f, b = a + 0.5f;
            if (MODE == 0) *reinterpret_cast<__nv_bfloat162*>(slot_out + (size_t)slot * N + c) = __floats2bfloat162_rn(a, b);
            else red2(acc + (size_t)t * N + c, a, b);
        }
    }
    if (s == 1.2345f) sink[0] = s;
}

// out[t] = sum over t's slots (token_slots[t][k]) of slot_out rows, f32 sum, bf16 out.
__global__ void __launch_bounds__(THREADS) combine_slots(const __nv_bfloat16* slot_out, const int* token_slots, __nv_bfloat16* out) {
    const int t = blockIdx.x;
    for (int c = threadIdx.x * 8; c < N; c += THREADS * 8) {
        float sum[8] = {};
        for (int k = 0; k < TOPK; k++) {
            const uint4 v = *reinterpret_cast<const uint4*>(slot_out + (size_t)token_slots[t * TOPK + k] * N + c);
            const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
            for (int j = 0; j < 4; j++) { sum[2 * j] += __low2float(h[j]); sum[2 * j + 1] += __high2float(h[j]); }
        }
        __align__(16) __nv_bfloat162 o[4];
        for (int j = 0; j < 4; j++) o[j] = __floats2bfloat162_rn(sum[2 * j], sum[2 * j + 1]);
        *reinterpret_cast<uint4*>(out + (size_t)t * N + c) = *reinterpret_cast<uint4*>(o);
    }
}

// out[t] = acc[t] as bf16; acc[t] = 0 for the next layer.
__global__ void __launch_bounds__(THREADS) combine_acc(float* acc, __nv_bfloat16* out) {
    const int t = blockIdx.x;
    for (int c = threadIdx.x * 8; c < N; c += THREADS * 8) {
        float4* a = reinterpret_cast<float4*>(acc + (size_t)t * N + c);
        const float4 x = a[0], y = a[1];
        a[0] = make_float4(0, 0, 0, 0);
        a[1] = make_float4(0, 0, 0, 0);
        __align__(16) __nv_bfloat162 o[4] = {__floats2bfloat162_rn(x.x, x.y), __floats2bfloat162_rn(x.z, x.w),
                                             __floats2bfloat162_rn(y.x, y.y), __floats2bfloat162_rn(y.z, y.w)};
        *reinterpret_cast<uint4*>(out + (size_t)t * N + c) = *reinterpret_cast<uint4*>(o);
    }
}

int main() {
    uint4* w;  // every expert's weights: 512 MiB
    CK(cudaMalloc(&w, (size_t)E * N * K * 2));
    CK(cudaMemset(w, 1, (size_t)E * N * K * 2));
    float* sink;
    CK(cudaMalloc(&sink, 4));
    for (int tokens : {2048, 4096}) {
        const int slots = tokens * TOPK;
        // Each token picks 8 distinct experts at random; slots sorted by expert (moe_permute's order).
        std::mt19937 rng(7);
        std::vector<std::vector<int>> by_e(E);
        for (int t = 0; t < tokens; t++) {
            std::vector<int> ex(E);
            for (int i = 0; i < E; i++) ex[i] = i;
            std::shuffle(ex.begin(), ex.end(), rng);
            for (int k = 0; k < TOPK; k++) by_e[ex[k]].push_back(t);
        }
        std::vector<int> start(E + 1), slot_token(slots), token_slots(slots), fill(tokens, 0);
        for (int e = 0, s = 0; e < E; e++) {
            start[e] = s;
            for (int t : by_e[e]) { slot_token[s] = t; token_slots[t * TOPK + fill[t]++] = s; s++; }
            start[e + 1] = s;
        }
        int *d_start, *d_st, *d_ts;
        __nv_bfloat16 *slot_out, *out;
        float* acc;
        CK(cudaMalloc(&d_start, (E + 1) * 4));
        CK(cudaMalloc(&d_st, slots * 4));
        CK(cudaMalloc(&d_ts, slots * 4));
        CK(cudaMalloc(&slot_out, (size_t)slots * N * 2));
        CK(cudaMalloc(&out, (size_t)tokens * N * 2));
        CK(cudaMalloc(&acc, (size_t)tokens * N * 4));
        CK(cudaMemset(acc, 0, (size_t)tokens * N * 4));
        CK(cudaMemcpy(d_start, start.data(), (E + 1) * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(d_st, slot_token.data(), slots * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(d_ts, token_slots.data(), slots * 4, cudaMemcpyHostToDevice));
        cudaEvent_t a, b, c;
        CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b)); CK(cudaEventCreate(&c));
        const int reps = 20;
        for (int mode = 0; mode < 3; mode++) {
            float t_down = 0, t_comb = 0;
            for (int it = 0; it < reps + 3; it++) {
                CK(cudaEventRecord(a));
                if (mode == 0) down_sim<0><<<E, THREADS>>>(w, d_start, d_st, slot_out, acc, sink);
                if (mode == 1) down_sim<1><<<E, THREADS>>>(w, d_start, d_st, slot_out, acc, sink);
                if (mode == 2) down_sim<2><<<E, THREADS>>>(w, d_start, d_st, slot_out, acc, sink);
                CK(cudaEventRecord(b));
                if (mode == 0) combine_slots<<<tokens, THREADS>>>(slot_out, d_ts, out);
                if (mode == 1) combine_acc<<<tokens, THREADS>>>(acc, out);
                CK(cudaEventRecord(c));
                CK(cudaEventSynchronize(c));
                float x, y;
                CK(cudaEventElapsedTime(&x, a, b));
                CK(cudaEventElapsedTime(&y, b, c));
                if (it >= 3) { t_down += x; t_comb += y; }
            }
            CK(cudaGetLastError());
            const char* name[] = {"store bf16 slot rows", "red.v2.f32 into token rows", "weights only"};
            printf("tokens %5d  %-28s down_sim %7.1f us  combine %6.1f us  sum %7.1f us\n", tokens, name[mode],
                   1e3f * t_down / reps, 1e3f * t_comb / reps, 1e3f * (t_down + t_comb) / reps);
        }
        // Check: the red path's combine equals the slot path's within bf16 rounding of the terms.
        down_sim<0><<<E, THREADS>>>(w, d_start, d_st, slot_out, acc, sink);
        combine_slots<<<tokens, THREADS>>>(slot_out, d_ts, out);
        std::vector<__nv_bfloat16> o1((size_t)tokens * N), o2((size_t)tokens * N);
        CK(cudaMemcpy(o1.data(), out, o1.size() * 2, cudaMemcpyDeviceToHost));
        down_sim<1><<<E, THREADS>>>(w, d_start, d_st, slot_out, acc, sink);
        combine_acc<<<tokens, THREADS>>>(acc, out);
        CK(cudaMemcpy(o2.data(), out, o2.size() * 2, cudaMemcpyDeviceToHost));
        double worst = 0;
        for (size_t i = 0; i < o1.size(); i++) {
            const double x = __bfloat162float(o1[i]), y = __bfloat162float(o2[i]);
            worst = std::max(worst, std::abs(x - y) / std::max(1e-3, std::abs(x)));
        }
        printf("tokens %5d  the two combines differ by at most %.4f (relative)\n", tokens, worst);
        cudaFree(d_start); cudaFree(d_st); cudaFree(d_ts); cudaFree(slot_out); cudaFree(out); cudaFree(acc);
    }
    return 0;
}
