// A token's MoE output as the expert GEMMs leave it: its topk weighted bf16 slot rows (moe_down's
// slot_out, through tok_slot), summed in k order. moe_combine (moe_permute.cu) and
// add_moe_rms_norm (norm.cu) both sum them here, so the two give the same bits (in rounds of
// COMBINE_K_UNROLL slots, add_moe_rms_norm's of NORM_SLOT_ROUND: at its 64 registers a larger
// round spilled).
#pragma once
#include "common.cuh"

// s[j] = the sum over k, in k order from 0, of slot row slots[k]'s column c + j (j < 8: one
// 16-byte load a slot), ROUND slots' loads in flight at once (in_load_rounds: 4 x ROUND registers).
template <int ROUND>
__device__ __forceinline__ void slot_sum8(const bf16* slot_out, const int32_t* slots, int topk, int hidden, int c, float (&s)[8]) {
#pragma unroll
    for (int j = 0; j < 8; j++) s[j] = 0.f;
    in_load_rounds<ROUND>(
        topk, [&](int k) { return *reinterpret_cast<const uint4*>(slot_out + (size_t)slots[k] * hidden + c); },
        [&](int, const uint4& q) {
            const __nv_bfloat162* b = reinterpret_cast<const __nv_bfloat162*>(&q);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float2 f = __bfloat1622float2(b[i]);
                s[2 * i] += f.x;
                s[2 * i + 1] += f.y;
            }
        });
}
