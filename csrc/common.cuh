// bf16 helpers and warp/block reductions; nothing model-specific.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>
#include <float.h>
#include "params.h"

__device__ __forceinline__ float bf2f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 f2bf(float x) { return __float2bfloat16(x); }

// bf16x2 of (a, b), a in the low half (the lower column), as bits.
__device__ __forceinline__ uint32_t bf16x2_bits(float a, float b) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    uint32_t u;
    memcpy(&u, &v, 4);  // a register move
    return u;
}

// A quad's (lanes 4a..4a+3) four 8-column groups of one row, lane q holding columns 2q, 2q + 1
// of group t in v[t] (two bf16), as each lane's whole group q (16 bytes, columns in order): a 4 x 4
// transpose by two butterfly exchanges. Every lane of the warp must take part.
__device__ __forceinline__ uint4 quad_transpose(uint32_t v0, uint32_t v1, uint32_t v2, uint32_t v3, int q) {
    // Lanes q, q ^ 1: an even lane keeps groups 0 and 2, an odd one 1 and 3, each now 4 columns
    // (the even lane's pair first).
    const bool odd = q & 1;
    const uint32_t r0 = __shfl_xor_sync(0xffffffffu, odd ? v0 : v1, 1);
    const uint32_t r1 = __shfl_xor_sync(0xffffffffu, odd ? v2 : v3, 1);
    const uint2 lo = odd ? make_uint2(r0, v1) : make_uint2(v0, r0);  // group 0 or 1
    const uint2 hi = odd ? make_uint2(r1, v3) : make_uint2(v2, r1);  // group 2 or 3
    // Lanes q, q ^ 2: lanes 0 and 1 keep the first of theirs (columns 0-3), 2 and 3 the second
    // (columns 4-7); each sends the other half.
    const bool upper = q & 2;
    const uint2 keep = upper ? hi : lo, send = upper ? lo : hi;
    const uint2 got = make_uint2(__shfl_xor_sync(0xffffffffu, send.x, 2), __shfl_xor_sync(0xffffffffu, send.y, 2));
    return upper ? make_uint4(got.x, got.y, keep.x, keep.y) : make_uint4(keep.x, keep.y, got.x, got.y);
}

// A quad's row of G / 4 groups of 8 columns out from column c0 of `row`, lane q holding columns
// c0 + 8j + 2q, + 1 as v[j] (bf16x2): the lanes trade them (quad_transpose) and each stores whole
// groups, 16-byte stores that write the row's 32-byte sectors whole (as each lane's own 4-byte
// pairs they were half sectors, and filled the LSU's queue). Groups from column n on, and every
// group where `ok` is false, are not stored; every lane of the warp takes part.
template <int G>
__device__ __forceinline__ void store_quad_row(bf16* row, int c0, int n, const uint32_t (&v)[G], bool ok) {
    static_assert(G % 4 == 0, "whole groups of the quad");
    const int q = threadIdx.x % 4;
#pragma unroll
    for (int t = 0; t < G / 4; t++) {
        const uint4 w = quad_transpose(v[4 * t], v[4 * t + 1], v[4 * t + 2], v[4 * t + 3], q);
        const int col = c0 + 8 * (4 * t + q);
        if (ok && col < n) *reinterpret_cast<uint4*>(row + col) = w;
    }
}

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

// bf16(v[j] * inv * w[j]) of 8 values, packed as one 16-byte store (an RMSNorm's output group).
__device__ __forceinline__ uint4 pack_normed8(const float* v, float inv, const float* w) {
    uint32_t o[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const __nv_bfloat162 b = __halves2bfloat162(f2bf(v[2 * i] * inv * w[2 * i]), f2bf(v[2 * i + 1] * inv * w[2 * i + 1]));
        memcpy(&o[i], &b, sizeof(b));  // a register move
    }
    return make_uint4(o[0], o[1], o[2], o[3]);
}

// Items 0..n-1 loaded R at a time and used in order: each round's loads (load(i), predicated on
// i < n) are issued in a loop of their own before the round's uses (use(i, value)). Guarded by
// `i < n` in one loop with its use, each load sat behind the branch and the use before it: the
// sm_90a SASS waited out every load in turn (tools/sass_load_chains.py). A round holds R values
// live.
template <int R, class Load, class Use>
__device__ __forceinline__ void in_load_rounds(int n, Load load, Use use) {
    using T = decltype(load(0));
    for (int i0 = 0; i0 < n; i0 += R) {
        T q[R];
#pragma unroll
        for (int u = 0; u < R; u++)
            if (i0 + u < n) q[u] = load(i0 + u);
#pragma unroll
        for (int u = 0; u < R; u++)
            if (i0 + u < n) use(i0 + u, q[u]);
    }
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
    // Negative: every bit flipped; otherwise the sign bit set. As one xor with the sign spread
    // over the word, which a caller that also needs the spread sign shares.
    return b ^ ((uint32_t)((int32_t)b >> 31) | 0x80000000u);
}
// The float whose order_key is k.
__device__ __forceinline__ float key_value(uint32_t k) { return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }

// 2^x by the one MUFU instruction, denormal results flushed to +0 (ex2.approx.ftz: 2^-inf = +0,
// which is how the attention's masked scores become P = 0).
__device__ __forceinline__ float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
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

// Programmatic dependent launch (sm_90; kernels.rs, launch_dependent): pdl_wait blocks until the
// kernel before in the stream has finished and its writes are visible (a no-op for a kernel
// launched without the attribute); pdl_release lets the stream's next kernel, if launched as a
// dependent, start its CTAs now (what they may do before their pdl_wait: read weights).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

__device__ __forceinline__ float silu_f(float x) { return x / (1.f + expf(-x)); }

// The KV pool's layout, [page][layer][k|v][page_size][nkv][d] bf16, as seen from layer c.layer:
// a position's page-table index and its slot in the page (a shift and a mask for page sizes that
// are powers of two, the engine's 32, where a division costs two integer divisions), and where a
// head's K or V row lies. block_attention works it out once a CTA (AttKvAddr), the rope store
// once a head.
struct KvLayout {
    int ps, shift;
    bool pow2;
    size_t row_elems;    // one position's K (or V) of all KV heads
    size_t page_stride;  // one page of every layer
    size_t layer_base;   // this layer's K within a page
    __device__ __forceinline__ KvLayout(const PagedKv& c, int nkv, int d) {
        ps = c.page_size;
        shift = __ffs(ps) - 1;
        pow2 = (ps & (ps - 1)) == 0;
        row_elems = (size_t)nkv * d;
        page_stride = (size_t)c.num_layers * 2 * ps * row_elems;
        layer_base = (size_t)c.layer * 2 * ps * row_elems;
    }
    __device__ __forceinline__ int page(int pos) const { return pow2 ? pos >> shift : pos / ps; }
    __device__ __forceinline__ int slot(int pos) const { return pow2 ? pos & (ps - 1) : pos % ps; }
    // Head h's K row (kv 0) or V row (kv 1) at `slot` of pool page `page`.
    __device__ __forceinline__ size_t row(int page, int slot, int kv, int h, int d) const {
        return (size_t)page * page_stride + layer_base + ((size_t)kv * ps + slot) * row_elems + (size_t)h * d;
    }
};

// Where head h's K (kv 0) or V (kv 1) of position pos lies; `pt` is the token's page table.
__device__ __forceinline__ size_t kv_offset(const PagedKv& c, const int32_t* pt, int pos, int kv, int nkv, int h, int d) {
    const KvLayout l(c, nkv, d);
    return l.row(pt[l.page(pos)], l.slot(pos), kv, h, d);
}
