// A token's MoE output as the expert GEMMs leave it: its topk weighted bf16 slot rows (moe_down's
// slot_out, through tok_slot), summed in k order. moe_combine (moe_permute.cu) and
// add_moe_rms_norm (norm.cu) both sum them here, so the two give the same bits (in rounds of
// COMBINE_K_UNROLL slots, add_moe_rms_norm's of NORM_SLOT_ROUND: at its 64 registers a larger
// round spilled).
#pragma once
#include "common.cuh"

// s[j] = the sum over k, in k order from 0, of slot row slots[k]'s column c + j (j < 8: one
// 16-byte load a slot), ROUND slots a round: a round's loads, each predicated on its k, are
// issued in a loop of their own before its sums. (Guarded by `k < topk` in one loop with its
// sum, each load sat behind a branch and the sum before it: one load latency a slot, 9 in a row
// for a mini token in the sm_90a SASS.) A round's loads are ROUND x 4 registers live.
template <int ROUND>
__device__ __forceinline__ void slot_sum8(const bf16* slot_out, const int32_t* slots, int topk, int hidden, int c, float (&s)[8]) {
#pragma unroll
    for (int j = 0; j < 8; j++) s[j] = 0.f;
    for (int k0 = 0; k0 < topk; k0 += ROUND) {
        uint4 q[ROUND];
#pragma unroll
        for (int u = 0; u < ROUND; u++)
            if (k0 + u < topk) q[u] = *reinterpret_cast<const uint4*>(slot_out + (size_t)slots[k0 + u] * hidden + c);
#pragma unroll
        for (int u = 0; u < ROUND; u++) {
            if (k0 + u >= topk) continue;
            const __nv_bfloat162* b = reinterpret_cast<const __nv_bfloat162*>(&q[u]);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float2 f = __bfloat1622float2(b[i]);
                s[2 * i] += f.x;
                s[2 * i + 1] += f.y;
            }
        }
    }
}
