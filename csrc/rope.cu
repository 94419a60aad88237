// Per-head QK RMSNorm + partial neox RoPE, and the write of K and V into the paged cache.
// Grid (token, group of ROPE_WARPS heads): one warp per head. CPU twins: rms_norm_row, rope_row.
// The rotation angles depend on the position only: each CTA reads its token's cos/sin from a
// table the host computed in f64 (as the CPU twin does, so large positions agree). A
// double-precision pow and sincos per element of every head made this kernel ~19 us a layer at
// batch 1; once per CTA, ~33 us a layer at batch 64 (12k CTAs, each waiting on f64 math), 26 us
// with the table. (A warp's head row kept in registers, its loads issued before the position's,
// measured slower at batch 64: 33 us, its 74 registers halving the CTAs an SM holds.)
// Head dims 128 and 256 take qk_norm_rope_store_v4 / _v8 below instead. Every form reads the
// QKV rows as f32 or, in its _bf16 kernel, as bf16 (half the bytes; the arithmetic is f32 either
// way, on the values as stored).
#include "common.cuh"

__device__ __forceinline__ float in_f32(float v) { return v; }
__device__ __forceinline__ float in_f32(bf16 v) { return bf2f(v); }

template <class In>
__device__ __forceinline__ void qk_norm_rope_store_scalar(const RopeParams& p) {
    __shared__ float buf[ROPE_WARPS][ROPE_MAX_D];
    __shared__ float cs[ROPE_MAX_D / 2], sn[ROPE_MAX_D / 2];
    // The attention after it may start its CTAs now (block_attention_deep, launched as a
    // programmatic dependent): they read only the step's layout before their pdl_wait.
    pdl_release();
    int t = blockIdx.x, lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    int d = p.d, half = p.rot / 2, pos = p.tok_pos[t];
    for (int j = threadIdx.x; j < half; j += blockDim.x) {
        if (pos < p.table_positions) {
            const float2 v = reinterpret_cast<const float2*>(p.cos_sin)[(size_t)pos * half + j];
            cs[j] = v.x;
            sn[j] = v.y;
        } else {
            double freq = pow((double)p.theta, -2.0 * j / p.rot);
            double s, c;
            sincos((double)pos * freq, &s, &c);
            cs[j] = (float)c;
            sn[j] = (float)s;
        }
    }
    __syncthreads();
    const int32_t* pt = p.kv.page_table + p.kv.tok_pt[t];
    const In* row = static_cast<const In*>(p.qkv) + (size_t)t * (p.nh + 2 * p.nkv) * d;
    float* b = buf[w];
    for (int h = blockIdx.y * ROPE_WARPS + w; h < p.nh + 2 * p.nkv; h += ROPE_WARPS * gridDim.y) {
        const In* src = row + (size_t)h * d;
        if (h >= p.nh + p.nkv) {  // V: stored as is
            bf16* dst = p.kv.pool + kv_offset(p.kv, pt, pos, 1, p.nkv, h - p.nh - p.nkv, d);
            for (int i = lane; i < d; i += WARP) dst[i] = f2bf(in_f32(src[i]));
            continue;
        }
        const float* nw = h < p.nh ? p.q_norm : p.k_norm;
        float ss = 0.f;
        for (int i = lane; i < d; i += WARP) {
            float v = in_f32(src[i]);
            ss += v * v;
        }
        float inv = rsqrtf(warp_sum(ss) / d + p.eps);
        for (int i = lane; i < d; i += WARP) b[i] = in_f32(src[i]) * inv * nw[i];
        __syncwarp();
        bf16* dst = h < p.nh ? p.q_out + (size_t)t * p.nh * d + (size_t)h * d
                             : p.kv.pool + kv_offset(p.kv, pt, pos, 0, p.nkv, h - p.nh, d);
        for (int i = lane; i < d; i += WARP) {
            float o = b[i];
            if (i < p.rot) {
                int j = i < half ? i : i - half;
                float sf = sn[j], cf = cs[j];
                o = i < half ? b[i] * cf - b[i + half] * sf : b[i] * cf + b[i - half] * sf;
            }
            dst[i] = f2bf(o);
        }
        __syncwarp();
    }
}

extern "C" __global__ void __launch_bounds__(ROPE_WARPS * WARP) qk_norm_rope_store(const RopeParams p) {
    qk_norm_rope_store_scalar<float>(p);
}
extern "C" __global__ void __launch_bounds__(ROPE_WARPS * WARP) qk_norm_rope_store_bf16(const RopeParams p) {
    qk_norm_rope_store_scalar<bf16>(p);
}

// ---- head dims 128 and 256: a head's row as one vector a lane ---------------------------------
// The same arithmetic, but lane l holds the V = d / WARP consecutive elements lV.. of a head
// (one 16- or 32-byte load of the f32 row, one 8- or 16-byte store of the bf16 one), a warp
// issues the loads of ROPE_VEC_HEADS of its heads before working on the first, and a rotation's
// partner half comes from lane l +- (rot / 2) / V by a shuffle instead of shared memory. The
// kernel above, a warp's head at a time (four dependent memory latencies a head: its loads, the
// sum, the staging, the stores of 2 bytes a lane), ran at ~36% of the copy bandwidth at batch 64
// and 48 us a call over a 4,096-token prefill (docs/PERF.md, session 21). Needs (rot / 2) % V == 0
// so that a lane's elements are all in the first half of the rotated part, all in the second, or
// all past it (the host checks).
template <int V>
__device__ __forceinline__ void load_row_f32(const float* p, float (&o)[V]) {
#pragma unroll
    for (int k = 0; k < V; k += 4) {
        const float4 a = *reinterpret_cast<const float4*>(p + k);
        o[k] = a.x;
        o[k + 1] = a.y;
        o[k + 2] = a.z;
        o[k + 3] = a.w;
    }
}

// The same from bf16 rows: one 8- or 16-byte load.
template <int V>
__device__ __forceinline__ void load_row_f32(const bf16* p, float (&o)[V]) {
    static_assert(V == 4 || V == 8, "8- or 16-byte loads");
    __align__(16) __nv_bfloat162 h[V / 2];
    if constexpr (V == 4) {
        *reinterpret_cast<uint2*>(h) = *reinterpret_cast<const uint2*>(p);
    } else {
        *reinterpret_cast<uint4*>(h) = *reinterpret_cast<const uint4*>(p);
    }
#pragma unroll
    for (int k = 0; k < V / 2; k++) {
        o[2 * k] = __low2float(h[k]);
        o[2 * k + 1] = __high2float(h[k]);
    }
}

template <int V>
__device__ __forceinline__ void store_row_bf16(bf16* p, const float (&o)[V]) {
    static_assert(V == 4 || V == 8, "8- or 16-byte stores");
    __align__(16) __nv_bfloat162 h[V / 2];
#pragma unroll
    for (int k = 0; k < V / 2; k++) h[k] = __floats2bfloat162_rn(o[2 * k], o[2 * k + 1]);
    if constexpr (V == 4) {
        *reinterpret_cast<uint2*>(p) = *reinterpret_cast<const uint2*>(h);
    } else {
        *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(h);
    }
}

template <int V, class In>
__device__ __forceinline__ void qk_norm_rope_store_vec(const RopeParams& p) {
    constexpr int B = ROPE_VEC_HEADS;
    pdl_release();  // as qk_norm_rope_store
    const int t = blockIdx.x, lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    const int d = WARP * V, half = p.rot / 2, pos = p.tok_pos[t], heads = p.nh + 2 * p.nkv;
    const int i0 = lane * V;
    const bool first = i0 < half, rotated = i0 < p.rot;
    const int partner = first ? lane + half / V : rotated ? lane - half / V : lane;
    // This lane's angles (of pairs j0..j0 + V - 1) and norm weights, for all of the warp's heads.
    float c[V], s[V], qn[V], kn[V];
    const int j0 = first ? i0 : i0 - half;
#pragma unroll
    for (int k = 0; k < V; k++) {
        c[k] = 1.f;
        s[k] = 0.f;
        if (!rotated) continue;
        if (pos < p.table_positions) {
            const float2 v = reinterpret_cast<const float2*>(p.cos_sin)[(size_t)pos * half + j0 + k];
            c[k] = v.x;
            s[k] = v.y;
        } else {
            double sd, cd;
            sincos((double)pos * pow((double)p.theta, -2.0 * (j0 + k) / p.rot), &sd, &cd);
            c[k] = (float)cd;
            s[k] = (float)sd;
        }
    }
    load_row_f32<V>(p.q_norm + i0, qn);
    load_row_f32<V>(p.k_norm + i0, kn);
    // The token's pool page, read here with the loads above: read where a K or V row is stored
    // (kv_offset), after the row's norm and rotation, it was one more memory latency a warp before
    // its first store (the compiler keeps a load after an earlier store to the pool, which may
    // alias the page table as far as it knows).
    const KvLayout kl(p.kv, p.nkv, d);
    const int page = p.kv.page_table[p.kv.tok_pt[t] + kl.page(pos)], slot = kl.slot(pos);
    const In* row = static_cast<const In*>(p.qkv) + (size_t)t * heads * d;
    const int step = ROPE_WARPS * gridDim.y;
    for (int h0 = blockIdx.y * ROPE_WARPS + w; h0 < heads; h0 += B * step) {
        float x[B][V];
#pragma unroll
        for (int b = 0; b < B; b++)
            if (h0 + b * step < heads) load_row_f32<V>(row + (size_t)(h0 + b * step) * d + i0, x[b]);
#pragma unroll
        for (int b = 0; b < B; b++) {
            const int h = h0 + b * step;  // uniform over the warp
            if (h >= heads) break;
            if (h >= p.nh + p.nkv) {  // V: stored as is
                store_row_bf16<V>(p.kv.pool + kl.row(page, slot, 1, h - p.nh - p.nkv, d) + i0, x[b]);
                continue;
            }
            const bool is_q = h < p.nh;
            float ss = 0.f;
#pragma unroll
            for (int k = 0; k < V; k++) ss += x[b][k] * x[b][k];
            const float inv = rsqrtf(warp_sum(ss) / d + p.eps);
            float o[V], r[V];
#pragma unroll
            for (int k = 0; k < V; k++) o[k] = x[b][k] * inv * (is_q ? qn[k] : kn[k]);
#pragma unroll
            for (int k = 0; k < V; k++) {
                const float y = __shfl_sync(0xffffffffu, o[k], partner);
                r[k] = first ? o[k] * c[k] - y * s[k] : rotated ? o[k] * c[k] + y * s[k] : o[k];
            }
            bf16* dst = is_q ? p.q_out + ((size_t)t * p.nh + h) * d : p.kv.pool + kl.row(page, slot, 0, h - p.nh, d);
            store_row_bf16<V>(dst + i0, r);
        }
    }
}

extern "C" __global__ void __launch_bounds__(ROPE_THREADS) qk_norm_rope_store_v4(const RopeParams p) { qk_norm_rope_store_vec<4, float>(p); }
extern "C" __global__ void __launch_bounds__(ROPE_THREADS) qk_norm_rope_store_v8(const RopeParams p) { qk_norm_rope_store_vec<8, float>(p); }
extern "C" __global__ void __launch_bounds__(ROPE_THREADS) qk_norm_rope_store_v4_bf16(const RopeParams p) {
    qk_norm_rope_store_vec<4, bf16>(p);
}
extern "C" __global__ void __launch_bounds__(ROPE_THREADS) qk_norm_rope_store_v8_bf16(const RopeParams p) {
    qk_norm_rope_store_vec<8, bf16>(p);
}
