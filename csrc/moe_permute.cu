// Token <-> expert-slot maps for the grouped GEMMs, and the deterministic combine back.
// moe_permute: one CTA; a stable counting sort of the (token, k) picks by expert (slot order
// inside an expert = pick order), then the work list of items (expert, first slot, rows <= tile_m).
// moe_combine: y[t] += sum over k (in k order) of the weighted expert rows of token t.
#include "common.cuh"

#define PERMUTE_MAX_E 1024

extern "C" __global__ void __launch_bounds__(1024) moe_permute(const PermuteParams p) {
    __shared__ int count[PERMUTE_MAX_E], offset[PERMUTE_MAX_E];
    int n = p.tokens * p.topk;
    for (int e = threadIdx.x; e < p.experts; e += blockDim.x) {
        int c = 0;
        for (int j = 0; j < n; j++) c += p.topk_ids[j] == e;
        count[e] = c;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int off = 0, items = 0;
        for (int e = 0; e < p.experts; e++) {
            offset[e] = off;
            for (int r = 0; r < count[e]; r += p.tile_m) {
                p.items[3 * items] = e;
                p.items[3 * items + 1] = off + r;
                p.items[3 * items + 2] = min(p.tile_m, count[e] - r);
                items++;
            }
            off += count[e];
        }
        *p.num_items = items;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < p.experts; e += blockDim.x) {
        int s = offset[e];
        for (int j = 0; j < n; j++) {
            if (p.topk_ids[j] == e) {
                p.slot_token[s] = j / p.topk;
                p.slot_weight[s] = p.topk_w[j];
                p.tok_slot[j] = s;
                s++;
            }
        }
    }
}

extern "C" __global__ void moe_combine(const CombineParams p) {
    int t = blockIdx.x;
    float* y = p.y + (size_t)t * p.hidden;
    for (int c = threadIdx.x; c < p.hidden; c += blockDim.x) {
        float r = 0.f;
        for (int k = 0; k < p.topk; k++) r += p.slot_out[(size_t)p.tok_slot[t * p.topk + k] * p.hidden + c];
        y[c] += r;
    }
}
