// Every kernel launch-parameter struct, shared with Rust: build.rs parses this file and
// generates the #[repr(C)] mirror (with size/offset asserts on both sides).
// Format rules (kept simple so the parser stays simple): one field per line; pointers first,
// then 32-bit scalars (int32_t, uint32_t, float); no nested structs, no arrays.
#pragma once
#include <stdint.h>
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

// gather.cu: x[r] = float(table[tokens[r]])
struct EmbedParams {
    const bf16* table;
    const uint32_t* tokens;
    float* out;
    int32_t rows;
    int32_t cols;
    int32_t vocab;
};

// gather.cu: out[i] = src[rows[i]]
struct GatherParams {
    const float* src;
    const int32_t* rows;
    float* out;
    int32_t n;
    int32_t cols;
};

// norm.cu: x += delta (if any); out = bf16(RMSNorm(x) * w)
struct NormParams {
    float* x;
    const float* delta;
    const float* w;
    bf16* out;
    int32_t rows;
    int32_t cols;
    float eps;
};

// Per-token step layout shared by rope.cu and attention.cu. The KV pool is
// [page][layer][k|v][page_size][nkv][d] bf16; a token's page table starts at page_table + tok_pt[t].
struct RopeParams {
    const float* qkv;
    const float* q_norm;
    const float* k_norm;
    bf16* q_out;
    bf16* kv;
    const int32_t* page_table;
    const int32_t* tok_pos;
    const int32_t* tok_pt;
    int32_t tokens;
    int32_t nh;
    int32_t nkv;
    int32_t d;
    int32_t rot;
    int32_t page_size;
    int32_t layer;
    int32_t num_layers;
    float eps;
    float theta;
};

// attention.cu, block_attention: one CTA per (query tile, KV head, key
// split). A tile is up to 32 query rows (tokens x the group of query heads of one KV head), all
// tokens of one run. With num_splits > 1 it writes unnormalised partials that
// attention_combine merges; with num_splits == 1 it writes out directly.
struct AttnParams {
    const bf16* q;
    const bf16* kv;
    bf16* out;
    const int32_t* page_table;
    const int32_t* tok_pt;
    const int32_t* tok_limit;
    const int32_t* tiles;
    float* part_acc;
    float* part_ml;
    int32_t tokens;
    int32_t nh;
    int32_t nkv;
    int32_t d;
    int32_t page_size;
    int32_t layer;
    int32_t num_layers;
    int32_t split_keys;
    int32_t num_splits;
    float scale;
};

// moe_router.cu, moe_router_select: one CTA per token over logits[t][e] (fp32).
struct RouterParams {
    const float* logits;
    const float* bias;
    int32_t* topk_ids;
    float* topk_w;
    int32_t tokens;
    int32_t experts;
    int32_t topk;
    int32_t n_group;
    int32_t topk_group;
    float scale;
};

// moe_permute.cu: stable counting sort of (token, k) picks by expert, and the work list of
// (expert, first sorted slot, rows) items of at most tile_m rows for the grouped GEMMs.
struct PermuteParams {
    const int32_t* topk_ids;
    const float* topk_w;
    int32_t* slot_token;
    float* slot_weight;
    int32_t* tok_slot;
    int32_t* items;
    int32_t* num_items;
    int32_t tokens;
    int32_t topk;
    int32_t experts;
    int32_t tile_m;
};

// moe_gemm.cu: grouped GEMM over the work list. gate_up: act[slot] = silu(x w1^T) * (x w2^T)
// with x = h[slot_token[slot]]; down: out[slot] = slot_weight[slot] * (act[slot] w1^T).
// Weights are [experts][n][k] bf16, row-major.
struct MoeGemmParams {
    const bf16* x;
    const bf16* w1;
    const bf16* w2;
    bf16* act_out;
    float* f32_out;
    const int32_t* slot_token;
    const float* slot_weight;
    const int32_t* items;
    const int32_t* num_items;
    int32_t n;
    int32_t k;
    int32_t max_items;
};

// moe_permute.cu: y[t] += sum_k slot_out[tok_slot[t*topk + k]] (fixed order: deterministic)
struct CombineParams {
    float* y;
    const float* slot_out;
    const int32_t* tok_slot;
    int32_t tokens;
    int32_t topk;
    int32_t hidden;
};

// mlp.cu: out[t, j] = bf16(silu(gu[t, j]) * gu[t, inter + j])
struct SiluMulParams {
    const float* gu;
    bf16* out;
    int32_t rows;
    int32_t inter;
};

// lm_head.cu: per row argmax (ties: lowest id) and its softmax probability.
struct PickParams {
    const float* logits;
    uint32_t* token;
    float* prob;
    int32_t rows;
    int32_t vocab;
};

// unmask.cu: LowConfidence over each request's block (see decode/policy.rs::low_confidence).
struct UnmaskParams {
    const float* prob;
    const int32_t* masked;
    const int32_t* quota;
    int32_t* chosen;
    int32_t requests;
    int32_t block;
    float threshold;
};

// init.cu: out[i] = mean + std * N(0,1), a counter-based draw from (seed, i).
struct InitParams {
    bf16* out_bf16;
    float* out_f32;
    uint32_t n_lo;
    uint32_t n_hi;
    uint32_t seed_lo;
    uint32_t seed_hi;
    float mean;
    float std;
};

// init.cu, spin_wait: one thread sleeps `us` microseconds.
struct SpinParams {
    uint32_t us;
};
