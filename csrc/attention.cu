// block_attention + attention_combine: bidirectional block attention as flash-decoding over
// the paged KV cache (GQA, online softmax, fp32 accumulate, bf16 tensor cores). Query token t
// sees keys [0, tok_limit[t]) of its sequence (block-causal: its own block and everything
// before it).
//
// Grid (tile, kv head, split). A tile is up to ATT_ROWS = 64 query rows: up to 64/group tokens
// of one run x the `group` query heads of KV head `kh` (row r = token r / group, head
// r % group), so every K/V row staged in shared memory serves 64 query rows. The CTA walks
// keys [split * split_keys, min(that + split_keys, tile's largest limit)) in chunks of
// ATT_KC = 32 keys, double-buffered: the cp.async copies of chunk c+1 (K and V, 16 bytes each,
// zero-filled past the end) are in flight while chunk c is computed. Each row is masked by its
// own limit (prefill tiles span blocks, so rows of one tile differ).
//
// Two passes over the split's keys (4 warps, WMMA 16x16x16 bf16 -> fp32); warp w owns query rows
// 16w..16w+15 throughout, so the only barriers are the two around each K/V stage:
//   pass 0, per chunk of K: S = Q K^T (the warp's 16 x 32 scores -> smem), each row's max (two
//     lanes a row, 16 scores each: a row costs one shuffle, not a warp-wide reduction);
//   pass 1, per chunk of K and V: S again, P = exp(S - max) (bf16, smem), l += sum P,
//     O += P V with O in WMMA accumulators (registers): with the final max known, O is never
//     rescaled. Recomputing Q K^T is cheap on tensor cores; K comes twice, mostly from L2.
// History (mini, H100): fp32 FMAs on CUDA cores measured 377 us a layer at batch 16; WMMA with
// O in shared memory (an online softmax rescales O every chunk) 221-250 us, bound by shared-
// memory traffic (ncu: MIO stalls, 8 warps an SM).
//
// Output: with one split the CTA normalises and writes `out`; otherwise it writes the
// unnormalised O and (m, l) per row to part_acc / part_ml (rows with no key in the split are
// skipped: attention_combine reads split s of token t only when s * split_keys < limit(t), and
// then the row has at least that key). d must be a multiple of 16 and at most 256 (mod.rs).
#include "common.cuh"
#include "cp_async.cuh"
#include <mma.h>
using namespace nvcuda;

// Issue the cp.async copies of keys [kbase, kbase + ATT_KC) (K and V rows of head kh) into one
// stage; keys at or past kend are zero-filled (0 * V must stay 0 in P.V).
__device__ __forceinline__ void att_load_chunk(const AttnParams& p, const int32_t* pt, int kh, int kbase, int kend,
                                               bf16* ks, bf16* vs, int ld, bool with_v) {
    int per_row = p.d / 8;
    for (int i = threadIdx.x; i < ATT_KC * per_row; i += ATT_THREADS) {
        int j = i / per_row, c = (i % per_row) * 8;
        int pos = kbase + j;
        bool valid = pos < kend;
        size_t ko = valid ? kv_offset(p.kv, pt, pos, 0, p.nkv, kh, p.d) : 0;
        // V of a position is page_size * nkv * d elements after its K.
        size_t vo = valid ? ko + (size_t)p.kv.page_size * p.nkv * p.d : 0;
        cp_async16(ks + j * ld + c, p.kv.pool + ko + c, valid);
        if (with_v) cp_async16(vs + j * ld + c, p.kv.pool + vo + c, valid);
    }
}

// NB: 16-column blocks of O held per warp (d <= 16 NB).
template <int NB>
__device__ __forceinline__ void block_attention_body(const AttnParams& p) {
    extern __shared__ __align__(128) unsigned char att_smem[];
    const int d = p.d, ld = d + 8, group = p.nh / p.nkv, nbd = d / 16;
    const AttSmem L = att_smem_layout(d);
    bf16* qs = reinterpret_cast<bf16*>(att_smem + L.q);
    bf16* kst = reinterpret_cast<bf16*>(att_smem + L.k);
    bf16* vst = reinterpret_cast<bf16*>(att_smem + L.v);
    float* ss = reinterpret_cast<float*>(att_smem + L.s);
    bf16* ps = reinterpret_cast<bf16*>(att_smem + L.pm);
    int* lim = reinterpret_cast<int*>(att_smem + L.lim);

    const int tile = blockIdx.x, kh = blockIdx.y, split = blockIdx.z;
    const int tid = threadIdx.x, lane = tid % WARP, w = tid / WARP;
    const int t0 = p.tiles[2 * tile], nt = p.tiles[2 * tile + 1];
    const int rows = nt * group;
    const int32_t* pt = p.kv.page_table + p.kv.tok_pt[t0];  // one run per tile: one page table

    // The tile's largest key limit bounds the keys any row needs (limits are >= 1).
    int kmax = 0;
    for (int i = 0; i < nt; i++) kmax = max(kmax, p.tok_limit[t0 + i]);
    const int k0 = split * p.split_keys, k1 = min(kmax, k0 + p.split_keys);
    if (k0 >= k1) return;  // uniform over the CTA
    const int nchunks = (k1 - k0 + ATT_KC - 1) / ATT_KC;

    // Two passes over the split's chunks, pipelined as one sequence of 2 x nchunks stages:
    // pass 0 (K only) finds each row's max score, pass 1 (K and V) adds exp(s - max) V into O
    // in registers, so O is never rescaled.
    att_load_chunk(p, pt, kh, k0, k1, kst, vst, ld, false);
    cp_async_commit();

    // Q rows (bf16 as stored; the scale is applied to S in fp32) and limits; padding rows have
    // Q = 0 and limit 0 (no key: their P rows stay 0).
    for (int i = tid; i < ATT_ROWS * (d / 8); i += ATT_THREADS) {
        const int r = i / (d / 8), c = (i % (d / 8)) * 8;
        uint4 u = make_uint4(0, 0, 0, 0);
        if (r < rows) {
            const int t = t0 + r / group, h = kh * group + r % group;
            u = *reinterpret_cast<const uint4*>(p.q + ((size_t)t * p.nh + h) * d + c);
        }
        *reinterpret_cast<uint4*>(qs + r * ld + c) = u;
    }
    if (tid < ATT_ROWS) lim[tid] = tid < rows ? min(p.tok_limit[t0 + tid / group], k1) : 0;

    // Softmax state: lanes 2i and 2i + 1 both hold row r0 + i's max and sum; each reads half of
    // the row's 32 scores of a chunk.
    float m_row = -INFINITY, l_row = 0.f;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> oacc[NB];
#pragma unroll
    for (int cb = 0; cb < NB; cb++) wmma::fill_fragment(oacc[cb], 0.f);
    const int r0 = w * ATT_RPW;  // this warp's rows

    for (int it = 0; it < 2 * nchunks; it++) {
        const int pass = it / nchunks, ch = it % nchunks;
        const int kbase = k0 + ch * ATT_KC, st = it & 1;
        if (it + 1 < 2 * nchunks) {
            // The stage being filled was last read in iteration it - 1, which ended in a barrier.
            const int nx = (it + 1) % nchunks;
            att_load_chunk(p, pt, kh, k0 + nx * ATT_KC, k1, kst + (st ^ 1) * ATT_KC * ld, vst + (st ^ 1) * ATT_KC * ld, ld,
                           it + 1 >= nchunks);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();  // stage it (and, the first time, Q / limits) visible to all
        const bf16* ks = kst + st * ATT_KC * ld;
        const bf16* vs = vst + st * ATT_KC * ld;

        // S = Q K^T for the warp's 16 rows x the chunk's 32 keys.
#pragma unroll
        for (int kb = 0; kb < ATT_KC / 16; kb++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> sacc;
            wmma::fill_fragment(sacc, 0.f);
            for (int kk = 0; kk < d; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
                wmma::load_matrix_sync(a, qs + r0 * ld + kk, ld);
                wmma::load_matrix_sync(b, ks + kb * 16 * ld + kk, ld);
                wmma::mma_sync(sacc, a, b, sacc);
            }
            wmma::store_matrix_sync(ss + r0 * ATT_SLD + kb * 16, sacc, ATT_SLD, wmma::mem_row_major);
        }
        __syncwarp();

        const int myrow = r0 + lane / 2, half = lane % 2, kfirst = kbase + half * 16;
        const int nvalid = min(max(lim[myrow] - kfirst, 0), 16);  // this lane's keys below the limit
        float sv[16];
#pragma unroll
        for (int j = 0; j < 16; j += 4) {
            const float4 v = *reinterpret_cast<const float4*>(ss + myrow * ATT_SLD + half * 16 + j);
            sv[j] = v.x * p.scale;
            sv[j + 1] = v.y * p.scale;
            sv[j + 2] = v.z * p.scale;
            sv[j + 3] = v.w * p.scale;
        }
        if (pass == 0) {
            float mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < 16; j++)
                if (j < nvalid) mx = fmaxf(mx, sv[j]);
            m_row = fmaxf(m_row, fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1)));
        } else {
            // P = exp(s - max) for keys below the limit (a row with no key has none: no -inf - -inf).
            float sum = 0.f;
            __align__(16) bf16 pb[16];
#pragma unroll
            for (int j = 0; j < 16; j++) {
                pb[j] = __float2bfloat16(j < nvalid ? __expf(sv[j] - m_row) : 0.f);
                sum += __bfloat162float(pb[j]);  // the sum of the P that P.V uses
            }
            uint4* dst = reinterpret_cast<uint4*>(ps + myrow * ATT_PLD + half * 16);
            dst[0] = reinterpret_cast<const uint4*>(pb)[0];
            dst[1] = reinterpret_cast<const uint4*>(pb)[1];
            l_row += sum + __shfl_xor_sync(0xffffffffu, sum, 1);
            __syncwarp();
#pragma unroll
            for (int kb = 0; kb < ATT_KC / 16; kb++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
                wmma::load_matrix_sync(a, ps + r0 * ATT_PLD + kb * 16, ATT_PLD);
#pragma unroll
                for (int cb = 0; cb < NB; cb++) {
                    if (cb < nbd) {
                        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
                        wmma::load_matrix_sync(b, vs + kb * 16 * ld + cb * 16, ld);
                        wmma::mma_sync(oacc[cb], a, b, oacc[cb]);
                    }
                }
            }
        }
        __syncthreads();  // stage st is free for the next load
    }

    // O -> shared memory (the K/V stages are free: 2 x 2 x 32 x (d + 8) bf16 >= 64 x (d + 4)
    // fp32), then each warp writes its rows.
    const int old = d + 4;
    float* os = reinterpret_cast<float*>(att_smem + L.k);
#pragma unroll
    for (int cb = 0; cb < NB; cb++)
        if (cb < nbd) wmma::store_matrix_sync(os + r0 * old + cb * 16, oacc[cb], old, wmma::mem_row_major);
    __syncwarp();
#pragma unroll
    for (int i = 0; i < ATT_RPW; i++) {
        const int r = r0 + i;
        const float li = __shfl_sync(0xffffffffu, l_row, 2 * i), mi = __shfl_sync(0xffffffffu, m_row, 2 * i);
        if (r >= rows || li == 0.f) continue;  // padding, or no key of this split (uniform)
        const int t = t0 + r / group, h = kh * group + r % group;
        const size_t row = (size_t)t * p.nh + h;
        const float* o = os + r * old;
        if (p.num_splits == 1) {
            const float inv = 1.f / li;
            for (int c = 2 * lane; c < d; c += 2 * WARP)
                *reinterpret_cast<__nv_bfloat162*>(p.out + row * d + c) = __floats2bfloat162_rn(o[c] * inv, o[c + 1] * inv);
        } else {
            const size_t prow = (size_t)split * p.tokens * p.nh + row;
            for (int c = 2 * lane; c < d; c += 2 * WARP)
                *reinterpret_cast<float2*>(p.part_acc + prow * d + c) = make_float2(o[c], o[c + 1]);
            if (lane == 0) *reinterpret_cast<float2*>(p.part_ml + prow * 2) = make_float2(mi, li);
        }
    }
}

// d <= 128 (mini, flash): 8 O fragments a warp.
extern "C" __global__ void __launch_bounds__(ATT_THREADS, 3) block_attention(const AttnParams p) {
    block_attention_body<8>(p);
}
// 128 < d <= 256.
extern "C" __global__ void __launch_bounds__(ATT_THREADS) block_attention_d256(const AttnParams p) {
    block_attention_body<16>(p);
}

// Merge the splits of block_attention. Grid (token, query head), one thread per output column:
// warp 0 reduces the splits' (m, l) to the global max and 1 / sum, then every thread sums its
// column over the splits with independent loads (the (m) of a split is a broadcast read).
// Split s holds token t's rows iff s * split_keys < limit(t).
extern "C" __global__ void attention_combine(const AttnParams p) {
    const int t = blockIdx.x, h = blockIdx.y, d = p.d;
    const int ns = (p.tok_limit[t] + p.split_keys - 1) / p.split_keys;
    const size_t stride = (size_t)p.tokens * p.nh;  // rows per split
    const size_t row = (size_t)t * p.nh + h;
    __shared__ float s_max, s_inv;
    if (threadIdx.x < WARP) {
        float mm = -INFINITY;
        for (int s = threadIdx.x; s < ns; s += WARP) mm = fmaxf(mm, p.part_ml[(s * stride + row) * 2]);
        mm = warp_max(mm);
        float ll = 0.f;
        for (int s = threadIdx.x; s < ns; s += WARP) ll += p.part_ml[(s * stride + row) * 2 + 1] * __expf(p.part_ml[(s * stride + row) * 2] - mm);
        ll = warp_sum(ll);
        if (threadIdx.x == 0) {
            s_max = mm;
            s_inv = 1.f / ll;
        }
    }
    __syncthreads();
    const float mm = s_max;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float a = 0.f;
#pragma unroll 4
        for (int s = 0; s < ns; s++) a += p.part_acc[(s * stride + row) * d + c] * __expf(p.part_ml[(s * stride + row) * 2] - mm);
        p.out[row * d + c] = f2bf(a * s_inv);
    }
}
