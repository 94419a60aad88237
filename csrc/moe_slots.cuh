// A token's MoE output as the expert GEMMs leave it: its topk weighted bf16 slot rows (moe_down's
// slot_out, through tok_slot), summed in k order. moe_combine (moe_permute.cu) and
// add_moe_rms_norm (norm.cu) both sum them here, so the two give the same bits (moe_combine and
// add_moe_rms_norm_together with a round's loads at once, add_moe_rms_norm one after the other:
// at its 64 registers the round spilled).
#pragma once
#include "common.cuh"

// s[j] = the sum over k, in k order from 0, of slot row slots[k]'s column c + j (j < 8: one
// 16-byte load a slot), COMBINE_K_UNROLL slots a round. Guarded by `k < topk`, a round's loads
// are not issued together: each sits behind the branch and the sum of the one before (sm_90a
// SASS: one load latency a slot, 9 in a row for a mini token). TOGETHER issues a round's loads,
// each predicated on its k, in a loop of their own before the round's sums: the same sums in the
// same order, COMBINE_K_UNROLL x 4 more registers live.
template <bool TOGETHER>
__device__ __forceinline__ void slot_sum8(const bf16* slot_out, const int32_t* slots, int topk, int hidden, int c, float (&s)[8]) {
#pragma unroll
    for (int j = 0; j < 8; j++) s[j] = 0.f;
    auto add = [&](const uint4& q) {
        const __nv_bfloat162* b = reinterpret_cast<const __nv_bfloat162*>(&q);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 f = __bfloat1622float2(b[i]);
            s[2 * i] += f.x;
            s[2 * i + 1] += f.y;
        }
    };
    auto row = [&](int k) { return *reinterpret_cast<const uint4*>(slot_out + (size_t)slots[k] * hidden + c); };
    for (int k0 = 0; k0 < topk; k0 += COMBINE_K_UNROLL) {
        if constexpr (TOGETHER) {
            uint4 q[COMBINE_K_UNROLL];
#pragma unroll
            for (int u = 0; u < COMBINE_K_UNROLL; u++)
                if (k0 + u < topk) q[u] = row(k0 + u);
#pragma unroll
            for (int u = 0; u < COMBINE_K_UNROLL; u++)
                if (k0 + u < topk) add(q[u]);
        } else {
#pragma unroll
            for (int u = 0; u < COMBINE_K_UNROLL; u++)
                if (k0 + u < topk) add(row(k0 + u));
        }
    }
}
