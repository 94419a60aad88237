#!/usr/bin/env python3
"""Independent PyTorch oracle for dllm: the LLaDA2 MoE forward, LowConfidence decoding
(LLaDA2.0) and JointThreshold decoding (LLaDA2.1: unmasking plus token edits).

Written from docs/MODEL.md only. Everything runs on the CPU in float64, and there is
deliberately NO KV cache: every denoising step recomputes the whole sequence with an
explicit block-causal attention mask, so comparing against the engine (which caches the
K/V of finished blocks) checks that cache.

Subcommands:
  logits    --model DIR --ids 1,2,3 --block-size B      last position's logits (debug aid)
  route-margins --model DIR (--ids 1,2,3 | --fixture F [--case NAME])   block routing's
            decisions per MoE layer and their float64 margins, the router input's scale
            [--bf16-router-input: the router's input rounded to bf16, as on the GPU]
  generate  --model DIR (--prompt-ids 1,2 | --prompt TEXT) [--chat] [--block-size 32
            --steps S --threshold 0.95 --max-new-tokens N --eos-id ID]   greedy output ids
            [--dllm-algorithm JointThreshold --edit-threshold E --max-post-edit-steps S]
  fixtures  --model DIR --out tests/fixtures            writes logits.json, greedy.json and
                                                        joint_threshold.json; for a block-routed
                                                        (LLaDA2.2) model block_routing_logits.json
                                                        and block_routing_greedy.json
  indel-policy-fixtures --out tests/fixtures            indel_policy.json (synthetic, no model)
  indel-engine-fixtures --model DIR (tiny 2.0)          indel_engine.json (stand-in edit ids)
  indel-fixtures --model DIR (tiny 2.2)                 indel.json: InDel end to end on the 2.2
                                                        checkpoint, step logs, rule coverage
"""

import argparse
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass

import torch

F64 = torch.float64
torch.set_grad_enabled(False)
torch.set_num_threads(1)  # tiny matrices: threads cost more than they give, on a shared machine

CHAT_TEMPLATE = (
    "<role>SYSTEM</role>You are a helpful assistant.<|role_end|>"
    "<role>HUMAN</role>{text}<|role_end|><role>ASSISTANT</role>"
)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------

@dataclass
class Config:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    rotary_dim: int
    rope_theta: float
    eps: float
    vocab: int
    experts: int
    top_k: int
    n_group: int
    topk_group: int
    routed_scaling: float
    first_dense: int
    use_qk_norm: bool
    tie_embeddings: bool
    mask_id: int | None
    eos_id: int | None
    # LLaDA2.2's block routing: the pool size and the routing block (config.json's
    # expert_capacity and block_size); None for per-token group-limited routing.
    expert_capacity: int | None = None
    route_block: int | None = None
    delete_id: int | None = None  # LLaDA2.2's edit tokens (config.json delete_token_id / split_token_id)
    split_id: int | None = None

    @staticmethod
    def from_json(c: dict) -> "Config":
        if c.get("model_type") != "llada2_moe":
            raise SystemExit(f"model_type is {c.get('model_type')!r}, expected 'llada2_moe'")
        if c.get("score_function", "sigmoid") != "sigmoid":
            raise SystemExit("only score_function=sigmoid is in the contract")
        heads = c["num_attention_heads"]
        head_dim = c.get("head_dim") or c["hidden_size"] // heads
        capacity = c.get("expert_capacity")
        if capacity is not None:
            if float(capacity) != int(capacity) or not c["num_experts_per_tok"] <= int(capacity) <= c["num_experts"]:
                raise SystemExit(f"expert_capacity {capacity!r} is not a whole number in [top_k, num_experts]")
            if not c.get("block_size"):
                raise SystemExit("expert_capacity needs block_size (the routing block)")
            capacity = int(capacity)
        rope_theta = c.get("rope_theta")
        if rope_theta is None:  # LLaDA2.2 keeps it in rope_parameters
            rope_theta = c["rope_parameters"]["rope_theta"]
        eos = c.get("eos_token_id")
        if isinstance(eos, list):  # HF allows a list; the first one is the canonical EOS
            eos = eos[0] if eos else None
        return Config(
            hidden=c["hidden_size"],
            layers=c["num_hidden_layers"],
            heads=heads,
            kv_heads=c["num_key_value_heads"],
            head_dim=head_dim,
            rotary_dim=int(head_dim * c.get("partial_rotary_factor", 1.0)),
            rope_theta=float(rope_theta),
            eps=float(c["rms_norm_eps"]),
            vocab=c["vocab_size"],
            experts=c["num_experts"],
            top_k=c["num_experts_per_tok"],
            n_group=c.get("n_group", 1) or 1,
            topk_group=c.get("topk_group", 1) or 1,
            routed_scaling=float(c.get("routed_scaling_factor", 1.0)),
            first_dense=c.get("first_k_dense_replace", 0) or 0,
            use_qk_norm=c.get("use_qk_norm", True),
            tie_embeddings=c.get("tie_word_embeddings", False),
            mask_id=c.get("mask_token_id"),
            eos_id=eos,
            expert_capacity=capacity,
            route_block=c.get("block_size") if capacity is not None else None,
            delete_id=c.get("delete_token_id"),
            split_id=c.get("split_token_id"),
        )


@dataclass
class Model:
    cfg: Config
    w: dict  # tensor name -> float64 tensor
    tokenizer: object | None
    files: list  # safetensors shard paths (for the fixtures' sha256 header)
    route_gaps: list | None = None  # routing near-tie gaps, collected by moe() when a list
    route_log: list | None = None  # per MoE layer, block routing's margins (route_margins)
    bf16_router_input: bool = False  # route-margins --bf16-router-input: the GPU's router input

    def t(self, name: str) -> torch.Tensor:
        if name not in self.w:
            raise KeyError(f"tensor {name} missing from checkpoint")
        return self.w[name]


def shard_files(model_dir: str) -> list:
    """Shard paths from model.safetensors.index.json, else the single model.safetensors."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        return [os.path.join(model_dir, s) for s in sorted(set(weight_map.values()))]
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(single):
        return [single]
    raise SystemExit(f"no model.safetensors(.index.json) in {model_dir}")


def load_model(model_dir: str) -> Model:
    from safetensors.torch import load_file

    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = Config.from_json(json.load(f))
    files = shard_files(model_dir)
    w = {}
    for path in files:
        # bf16 on disk; widen to float64 so the oracle's own rounding error is negligible.
        for name, t in load_file(path).items():
            w[name] = t.to(F64)
    if cfg.tie_embeddings and "lm_head.weight" not in w:
        w["lm_head.weight"] = w["model.word_embeddings.weight"]

    tokenizer = None
    tok_path = os.path.join(model_dir, "tokenizer.json")
    if os.path.exists(tok_path):
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(tok_path)
    # mask / eos ids: config.json first, then the tokenizer's special tokens.
    if cfg.mask_id is None and tokenizer is not None:
        cfg.mask_id = tokenizer.token_to_id("<|mask|>")
    if cfg.eos_id is None and tokenizer is not None:
        cfg.eos_id = tokenizer.token_to_id("<|endoftext|>")
    return Model(cfg, w, tokenizer, files)


def encode(model: Model, text: str) -> list:
    # No post-processor specials (BOS etc.): the engine encodes with add_special_tokens=false.
    return model.tokenizer.encode(text, add_special_tokens=False).ids


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------

def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * w over the last dimension."""
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * weight


def rope(x: torch.Tensor, positions: torch.Tensor, rotary_dim: int, theta: float) -> torch.Tensor:
    """Neox-style partial RoPE on x [L, heads, D]: dims i and i + r/2 (i < r/2) rotate
    together by pos * theta^(-2i/r); dims >= r pass through unchanged."""
    r = rotary_dim
    if r == 0:
        return x
    half = r // 2
    i = torch.arange(half, dtype=F64)
    freq = theta ** (-2.0 * i / r)  # [r/2]
    angle = positions.to(F64)[:, None] * freq[None, :]  # [L, r/2]
    cos, sin = torch.cos(angle)[:, None, :], torch.sin(angle)[:, None, :]
    x1, x2, rest = x[..., :half], x[..., half:r], x[..., r:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


def block_causal_mask(length: int, block_size: int) -> torch.Tensor:
    """allowed[p, j]: position p sees keys j < min(end_of_block(p), L), i.e. everything in
    its own block (bidirectional) and in earlier blocks, nothing in later ones. A partial
    last block simply has fewer keys (j < L)."""
    p = torch.arange(length)
    end = torch.clamp((p // block_size + 1) * block_size, max=length)
    j = torch.arange(length)
    return j[None, :] < end[:, None]


def attention(model: Model, i: int, h: torch.Tensor, positions: torch.Tensor,
              allowed: torch.Tensor) -> torch.Tensor:
    """Fused-QKV GQA attention of layer i over the whole sequence, with the given mask."""
    c, pre = model.cfg, f"model.layers.{i}.attention."
    L, nh, nkv, d = h.shape[0], c.heads, c.kv_heads, c.head_dim
    qkv = h @ model.t(pre + "query_key_value.weight").T
    if pre + "query_key_value.bias" in model.w:  # use_qkv_bias checkpoints
        qkv = qkv + model.w[pre + "query_key_value.bias"]
    # Rows are laid out Q heads, then K heads, then V heads, D rows per head.
    q = qkv[:, : nh * d].reshape(L, nh, d)
    k = qkv[:, nh * d : (nh + nkv) * d].reshape(L, nkv, d)
    v = qkv[:, (nh + nkv) * d :].reshape(L, nkv, d)
    if c.use_qk_norm:  # per-head RMSNorm over D, before RoPE
        q = rmsnorm(q, model.t(pre + "query_layernorm.weight"), c.eps)
        k = rmsnorm(k, model.t(pre + "key_layernorm.weight"), c.eps)
    q = rope(q, positions, c.rotary_dim, c.rope_theta)
    k = rope(k, positions, c.rotary_dim, c.rope_theta)
    # GQA: query head h reads KV head h // (nh / nkv).
    group = nh // nkv
    k = k.repeat_interleave(group, dim=1)  # [L, nh, d]
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(d)
    scores = scores.masked_fill(~allowed[None, :, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    o = torch.einsum("hqk,khd->qhd", probs, v).reshape(L, nh * d)
    out = o @ model.t(pre + "dense.weight").T
    if pre + "dense.bias" in model.w:
        out = out + model.w[pre + "dense.bias"]
    return out


def mlp(model: Model, prefix: str, h: torch.Tensor) -> torch.Tensor:
    """SwiGLU: (silu(h Wg^T) * (h Wu^T)) Wd^T."""
    g = h @ model.t(prefix + "gate_proj.weight").T
    u = h @ model.t(prefix + "up_proj.weight").T
    return (torch.nn.functional.silu(g) * u) @ model.t(prefix + "down_proj.weight").T


def block_route(model: Model, s: torch.Tensor, b: torch.Tensor):
    """LLaDA2.2's block routing over rows that start at position 0: rows [j*R, (j+1)*R) form
    routing block j (R = config.json block_size; the last block may be short and routes on the
    rows it has). An expert's block score is its largest biased score b over the block's rows;
    the expert_capacity experts with the largest block scores form the block's pool; each row
    takes the top_k experts of the pool by its own b. Ties go to the lower expert index (stable
    descending sorts). Returns the chosen experts [T, k] in rank order."""
    c = model.cfg
    T, E, R, C = s.shape[0], c.experts, c.route_block, c.expert_capacity
    chosen = torch.empty(T, c.top_k, dtype=torch.long)
    for start in range(0, T, R):
        bb = b[start : start + R]  # [rows, E]
        score = bb.max(dim=0).values  # [E]
        order = torch.sort(score, descending=True, stable=True)
        pool = torch.zeros(E, dtype=torch.bool)
        pool[order.indices[:C]] = True
        masked = bb.masked_fill(~pool[None, :], float("-inf"))
        e_sorted = torch.sort(masked, dim=-1, descending=True, stable=True)
        chosen[start : start + R] = e_sorted.indices[:, : c.top_k]
        if model.route_gaps is not None:
            # Near-ties at either cut would make the engine's fp32 router pick other experts.
            if C < E:
                model.route_gaps.append((order.values[C - 1] - order.values[C]).item())
            if c.top_k < C:
                gap = e_sorted.values[:, c.top_k - 1] - e_sorted.values[:, c.top_k]
                model.route_gaps.append(gap.min().item())
    return chosen


def moe(model: Model, i: int, h: torch.Tensor) -> torch.Tensor:
    """Routed experts plus the shared expert(s). Sigmoid routing: selection uses the biased
    b = s + expert_bias, the weights the unbiased s. Per token, group-limited (ties go to the
    lower group / expert index: stable descending sorts), or per routing block when the config
    has expert_capacity (block_route)."""
    c, pre = model.cfg, f"model.layers.{i}.mlp."
    T, E, G = h.shape[0], c.experts, c.n_group
    assert E % G == 0, "num_experts must be a multiple of n_group"
    # Router in float64 here (the contract says fp32; f64 is the more exact oracle).
    hr = h.to(torch.bfloat16).to(h.dtype) if model.bf16_router_input else h
    s = torch.sigmoid(hr @ model.t(pre + "gate.weight").T)  # [T, E] router probabilities
    b = s + model.t(pre + "gate.expert_bias")  # bias only steers the choice
    if c.expert_capacity is not None:
        if model.route_log is not None:
            model.route_log.append(route_margins(model, i, hr, b))
        return routed_output(model, pre, h, s, block_route(model, s, b))

    # Group score = sum of the two largest b in the group; keep the topk_group best groups.
    grouped = b.reshape(T, G, E // G)
    top2 = torch.sort(grouped, dim=-1, descending=True, stable=True).values[..., :2]
    group_score = top2.sum(-1)  # [T, G]
    g_order = torch.sort(group_score, dim=-1, descending=True, stable=True).indices
    kept_groups = g_order[:, : c.topk_group]
    keep = torch.zeros(T, G, dtype=torch.bool)
    keep.scatter_(1, kept_groups, True)
    keep = keep[:, :, None].expand(T, G, E // G).reshape(T, E)

    # Top-k experts by b among the kept groups.
    masked_b = b.masked_fill(~keep, float("-inf"))
    e_sorted = torch.sort(masked_b, dim=-1, descending=True, stable=True)
    chosen = e_sorted.indices[:, : c.top_k]  # [T, k]
    if model.route_gaps is not None:
        # Near-ties in routing would make the engine's fp32 router pick other experts.
        gs = torch.sort(group_score, dim=-1, descending=True).values
        if c.topk_group < G:
            model.route_gaps.append((gs[:, c.topk_group - 1] - gs[:, c.topk_group]).min().item())
        vals = e_sorted.values
        if c.top_k < E:
            gap = vals[:, c.top_k - 1] - vals[:, c.top_k]
            model.route_gaps.append(gap[torch.isfinite(gap)].min().item() if torch.isfinite(gap).any() else math.inf)

    return routed_output(model, pre, h, s, chosen)


def route_margins(model: Model, i: int, h: torch.Tensor, b: torch.Tensor) -> dict:
    """Block routing's decisions at MoE layer i and how close each was (the route-margins
    command): per routing block its pool and the pool's cut margin (admission score, the block
    max of b, of the last admitted expert minus that of the first rejected), per row its picks
    and pick margin (b of the k-th pick minus the best pool expert it left). And the router
    input's scale S = max over rows and experts of sum_i |h_i W_ei|: a relative 2^-8 error in h
    (bf16 rounding) moves a logit by at most 2^-8 S, a biased score by at most 2^-10 S (sigmoid
    slope <= 1/4), a margin by at most 2^-9 S."""
    c, pre = model.cfg, f"model.layers.{i}.mlp."
    w = model.t(pre + "gate.weight")
    E, R, C, k = c.experts, c.route_block, c.expert_capacity, c.top_k
    blocks = []
    for start in range(0, b.shape[0], R):
        bb = b[start : start + R]
        order = torch.sort(bb.max(dim=0).values, descending=True, stable=True)
        pool = torch.zeros(E, dtype=torch.bool)
        pool[order.indices[:C]] = True
        es = torch.sort(bb.masked_fill(~pool[None, :], float("-inf")), dim=-1, descending=True, stable=True)
        blocks.append({
            "rows": [start, start + bb.shape[0]],
            "pool": order.indices[:C].tolist(),
            "pool_margin": (order.values[C - 1] - order.values[C]).item() if C < E else math.inf,
            "picks": es.indices[:, :k].tolist(),
            "pick_margins": (es.values[:, k - 1] - es.values[:, k]).tolist() if k < C else [math.inf] * bb.shape[0],
        })
    return {"layer": i, "input_scale": (h.abs() @ w.abs().T).max().item(), "blocks": blocks}


def print_route_margins(model: Model, name: str, ids: list, block_size: int, case: dict | None = None):
    model.route_log = []
    logits = forward(model, ids, block_size)
    log, model.route_log = model.route_log, None
    for p, want in zip(case["positions"], case["logits"]) if case else []:
        want = torch.tensor(want, dtype=torch.float64)
        print(f"{name} position {p}: relative error against the fixture {((logits[p] - want).norm() / want.norm()).item():.3e}")
    for l in log:
        s = l["input_scale"]
        print(f"{name} layer {l['layer']}: input scale S = max sum|h W| = {s:.4f} (score move <= 2^-10 S = "
              f"{s / 1024:.3e}, near tie < 2^-9 S = {s / 512:.3e})")
        for j, bl in enumerate(l["blocks"]):
            print(f"  block {j} rows {bl['rows'][0]}..{bl['rows'][1]}: pool {bl['pool']} cut margin {bl['pool_margin']:.3e}")
            worst = min(range(len(bl["picks"])), key=lambda r: bl["pick_margins"][r])
            for r, (p, m) in enumerate(zip(bl["picks"], bl["pick_margins"])):
                flag = " <- smallest" if r == worst else ""
                print(f"    row {bl['rows'][0] + r}: picks {p} margin {m:.3e}{flag}")
    return max(l["input_scale"] for l in log)


def routed_output(model: Model, pre: str, h: torch.Tensor, s: torch.Tensor,
                  chosen: torch.Tensor) -> torch.Tensor:
    """sum_k w_k expert_k(h) + shared(h), w_k = s_k / sum(s_chosen) * routed_scaling_factor."""
    c, E = model.cfg, model.cfg.experts
    s_chosen = torch.gather(s, 1, chosen)
    weights = s_chosen / s_chosen.sum(-1, keepdim=True) * c.routed_scaling  # [T, k]

    out = torch.zeros_like(h)
    for e in range(E):  # run each expert only on the tokens routed to it
        tok, slot = torch.nonzero(chosen == e, as_tuple=True)
        if tok.numel() == 0:
            continue
        y = mlp(model, pre + f"experts.{e}.", h[tok])
        out.index_add_(0, tok, y * weights[tok, slot][:, None])
    return out + mlp(model, pre + "shared_experts.", h)


def forward(model: Model, ids, block_size: int) -> torch.Tensor:
    """Full-sequence forward with the block-causal mask. Returns logits [L, V] (float64)."""
    c = model.cfg
    if c.route_block is not None and block_size != c.route_block:
        # The routing blocks are the decode blocks: see docs/MODEL.md (block routing).
        raise SystemExit(f"this model routes per block of {c.route_block}; block size {block_size} is refused")
    ids_t = torch.as_tensor(list(ids), dtype=torch.long)
    L = ids_t.shape[0]
    positions = torch.arange(L)  # absolute positions, from 0
    allowed = block_causal_mask(L, block_size)
    x = model.t("model.word_embeddings.weight")[ids_t]
    for i in range(c.layers):
        pre = f"model.layers.{i}."
        h = rmsnorm(x, model.t(pre + "input_layernorm.weight"), c.eps)
        x = x + attention(model, i, h, positions, allowed)
        h = rmsnorm(x, model.t(pre + "post_attention_layernorm.weight"), c.eps)
        if i < c.first_dense:
            x = x + mlp(model, pre + "mlp.", h)
        else:
            x = x + moe(model, i, h)
    x = rmsnorm(x, model.t("model.norm.weight"), c.eps)
    return x @ model.t("lm_head.weight").T


# --------------------------------------------------------------------------------------
# Decoding (LowConfidence, greedy)
# --------------------------------------------------------------------------------------

def quota_schedule(block_size: int, steps: int) -> list:
    """Tokens to unmask at each step: base = B // steps, the first B % steps steps get +1."""
    base, extra = divmod(block_size, steps)
    return [base + (1 if s < extra else 0) for s in range(steps)]


@dataclass
class Decision:
    """One step's choice among the masked positions of the current block."""
    chosen: list  # positions to write x0 into
    threshold_branch: bool
    quota_gap: float  # p gap at the quota cut-off (inf when not applicable)
    threshold_gap: float  # how far the nearest p that could change the outcome is from the threshold


def low_confidence_policy(masked: list, p: dict, quota: int, threshold: float) -> Decision:
    """If at least min(quota, #masked) masked positions have p > threshold, take all of
    them; else take the min(quota, #masked) most confident (ties: lower position first)."""
    k = min(quota, len(masked))
    confident = [pos for pos in masked if p[pos] > threshold]
    if len(confident) >= k:
        # Any p crossing the threshold changes the chosen set (or the branch).
        gap = min(abs(p[pos] - threshold) for pos in masked)
        return Decision(confident, True, math.inf, gap)
    ranked = sorted(masked, key=lambda pos: (-p[pos], pos))
    gap = p[ranked[k - 1]] - p[ranked[k]] if 0 < k < len(ranked) else math.inf
    # Here only a p rising above the threshold could switch to the threshold branch, and
    # only when that would bring the count up to k.
    below = [threshold - p[pos] for pos in masked if p[pos] <= threshold]
    t_gap = min(below) if below and len(confident) + 1 >= k else math.inf
    return Decision(ranked[:k], False, gap, t_gap)


@dataclass
class GenResult:
    output_ids: list
    num_steps: int = 0
    threshold_branch_steps: int = 0
    strict_threshold_steps: int = 0  # threshold branch took MORE than the quota
    min_logit_gap: float = math.inf  # top-2 logit gap over every argmax written
    min_quota_gap: float = math.inf  # confidence gap at every quota cut-off
    min_threshold_gap: float = math.inf  # min |p - threshold| where it could matter
    mask_predictions: int = 0  # chosen positions whose x0 was the mask token (stay masked)

    @property
    def min_margin(self) -> float:
        return min(self.min_logit_gap, self.min_quota_gap)


def generation_done(generated: list, max_new_tokens: int, eos_id, mask_id: int) -> bool:
    """After a block: stop once max_new_tokens are generated, or at an EOS with no mask before it."""
    if len(generated) >= max_new_tokens:
        return True
    return eos_id is not None and eos_id in generated and mask_id not in generated[: generated.index(eos_id)]


def output_ids(generated: list, max_new_tokens: int, eos_id) -> list:
    """The output: cut at max_new_tokens and after the first EOS (the EOS itself kept)."""
    out = generated[:max_new_tokens]
    if eos_id is not None and eos_id in out:
        out = out[: out.index(eos_id) + 1]
    return out


def generate(model: Model, prompt_ids, block_size: int = 32, steps: int | None = None,
             threshold: float = 0.95, max_new_tokens: int = 64, eos_id: int | None = None,
             mask_id: int | None = None) -> GenResult:
    """LowConfidence block diffusion, temperature 0, recomputing everything each step."""
    B = block_size
    steps = steps or B
    mask_id = model.cfg.mask_id if mask_id is None else mask_id
    assert mask_id is not None, "no mask token id (config.json mask_token_id or <|mask|>)"
    quotas = quota_schedule(B, steps)
    P = len(prompt_ids)
    tokens = list(prompt_ids)
    res = GenResult(output_ids=[])
    first_block = P // B  # the prompt's whole blocks are context only
    last_block = -(-(P + max_new_tokens) // B) - 1  # ceil((P + max_new) / B) - 1

    for blk in range(first_block, last_block + 1):
        start, end = blk * B, (blk + 1) * B
        # Fill the block with masks, keeping any prompt tokens it holds.
        tokens = tokens + [mask_id] * (end - len(tokens))
        masked = [pos for pos in range(max(start, P), end)]
        s = 0
        while masked and s < steps:
            # Forward over the prefix blocks and the current block, nothing after it.
            logits = forward(model, tokens[:end], B)
            x0, p, gap = {}, {}, {}
            for pos in masked:
                row = logits[pos]
                x0[pos] = int(torch.argmax(row))  # first index on ties
                top2 = torch.topk(row, 2).values
                gap[pos] = (top2[0] - top2[1]).item()
                p[pos] = torch.exp(row[x0[pos]] - torch.logsumexp(row, 0)).item()
            d = low_confidence_policy(masked, p, quotas[s], threshold)
            # Only the argmaxes actually written matter; a near-tie elsewhere changes nothing
            # (p is continuous across the tie, so the ranking is unaffected).
            res.min_logit_gap = min([res.min_logit_gap] + [gap[pos] for pos in d.chosen])
            res.num_steps += 1
            if d.threshold_branch:
                res.threshold_branch_steps += 1
                if len(d.chosen) > min(quotas[s], len(masked)):
                    res.strict_threshold_steps += 1
            res.min_quota_gap = min(res.min_quota_gap, d.quota_gap)
            res.min_threshold_gap = min(res.min_threshold_gap, d.threshold_gap)
            for pos in d.chosen:
                tokens[pos] = x0[pos]
                if x0[pos] == mask_id:
                    res.mask_predictions += 1  # written, but it is still a mask
            masked = [pos for pos in masked if tokens[pos] == mask_id]
            s += 1
        # A block still holding masks after `steps` steps is left as it is.
        if generation_done(tokens[P:end], max_new_tokens, eos_id, mask_id):
            break

    res.output_ids = output_ids(tokens[P:], max_new_tokens, eos_id)
    return res


# --------------------------------------------------------------------------------------
# Decoding (JointThreshold, greedy): LLaDA2.1's mask-to-token plus token-to-token edits
# --------------------------------------------------------------------------------------

@dataclass
class JointResult:
    output_ids: list
    num_steps: int = 0
    unmask_threshold_steps: int = 0  # steps whose unmasks all passed the threshold
    unmask_fallback_steps: int = 0  # steps where none passed: the most confident one
    edits: int = 0  # positions rewritten by an edit
    edit_steps: int = 0  # steps with at least one edit
    declined_edits: int = 0  # decoded positions whose argmax differed but p <= edit_threshold
    post_edit_steps: int = 0  # steps that started with no mask in their block
    settled_blocks: int = 0  # blocks ended by a maskless step that changed nothing
    budget_blocks: int = 0  # blocks ended by the post-edit budget
    capped_blocks: int = 0  # blocks ended by the step cap (B + max_post_edit_steps)
    mask_predictions: int = 0  # writes of the mask token (the position is a mask again)
    min_logit_gap: float = math.inf  # top-2 logit gap where the argmax decides something
    min_rank_gap: float = math.inf  # confidence gap at the fallback's top-1 choice
    min_threshold_gap: float = math.inf  # min |p - threshold| over masked positions
    min_edit_gap: float = math.inf  # min |p - edit_threshold| over differing decoded positions

    @property
    def min_margin(self) -> float:
        return min(self.min_logit_gap, self.min_rank_gap, self.min_threshold_gap, self.min_edit_gap)


def joint_threshold_generate(model: Model, prompt_ids, block_size: int = 32, threshold: float = 0.5,
                             edit_threshold: float = 0.0, max_post_edit_steps: int = 16,
                             max_new_tokens: int = 64, eos_id: int | None = None,
                             mask_id: int | None = None) -> JointResult:
    """JointThreshold block diffusion, temperature 0, recomputing everything each step (no
    KV cache). Per block, each step: masked positions with p > threshold are unmasked, else
    the single most confident one; a decoded, non-prompt position whose argmax differs from
    its token with p > edit_threshold takes the argmax. A step that starts with no mask counts
    against max_post_edit_steps and is not run past it; a maskless step that changes nothing
    ends the block; a block takes at most B + max_post_edit_steps steps."""
    B = block_size
    mask_id = model.cfg.mask_id if mask_id is None else mask_id
    assert mask_id is not None, "no mask token id (config.json mask_token_id or <|mask|>)"
    P = len(prompt_ids)
    tokens = list(prompt_ids)
    res = JointResult(output_ids=[])
    first_block = P // B
    last_block = -(-(P + max_new_tokens) // B) - 1

    for blk in range(first_block, last_block + 1):
        start, end = blk * B, (blk + 1) * B
        tokens = tokens + [mask_id] * (end - len(tokens))
        editable = range(max(start, P), end)  # never the prompt's positions
        post = 0
        steps_in_block = 0
        while True:
            masked = [pos for pos in editable if tokens[pos] == mask_id]
            if not masked:
                post += 1
                if post > max_post_edit_steps:
                    res.budget_blocks += 1
                    break
            if steps_in_block == B + max_post_edit_steps:
                res.capped_blocks += 1
                break
            rows = forward(model, tokens[:end], B)[start:end]
            top2 = torch.topk(rows, 2, dim=1)
            amax = torch.argmax(rows, dim=1)  # first index on ties
            probs = torch.exp(rows.gather(1, amax[:, None])[:, 0] - torch.logsumexp(rows, 1))
            x0 = {q: int(amax[q - start]) for q in editable}
            p = {q: float(probs[q - start]) for q in editable}
            gap = {q: float(top2.values[q - start, 0] - top2.values[q - start, 1]) for q in editable}
            res.num_steps += 1
            steps_in_block += 1
            # Mask to token.
            unmask = []
            if masked:
                res.min_threshold_gap = min([res.min_threshold_gap] + [abs(p[q] - threshold) for q in masked])
                unmask = [q for q in masked if p[q] > threshold]
                if unmask:
                    res.unmask_threshold_steps += 1
                else:
                    res.unmask_fallback_steps += 1
                    ranked = sorted(masked, key=lambda q: (-p[q], q))
                    unmask = ranked[:1]
                    if len(ranked) > 1:
                        res.min_rank_gap = min(res.min_rank_gap, p[ranked[0]] - p[ranked[1]])
                res.min_logit_gap = min([res.min_logit_gap] + [gap[q] for q in unmask])
            else:
                res.post_edit_steps += 1
            # Token to token, judged on the tokens this step's forward saw.
            edits = []
            for q in editable:
                if tokens[q] == mask_id:
                    continue
                # Whether the argmax differs decides an edit wherever p could pass the bar.
                if p[q] > edit_threshold - 0.01:
                    res.min_logit_gap = min(res.min_logit_gap, gap[q])
                if x0[q] != tokens[q]:
                    res.min_edit_gap = min(res.min_edit_gap, abs(p[q] - edit_threshold))
                    if p[q] > edit_threshold:
                        edits.append(q)
                    else:
                        res.declined_edits += 1
            if edits:
                res.edit_steps += 1
                res.edits += len(edits)
            for q in unmask + edits:
                tokens[q] = x0[q]
                if x0[q] == mask_id:
                    res.mask_predictions += 1
            if not masked and not edits:
                res.settled_blocks += 1
                break
        if generation_done(tokens[P:end], max_new_tokens, eos_id, mask_id):
            break

    res.output_ids = output_ids(tokens[P:], max_new_tokens, eos_id)
    return res


# --------------------------------------------------------------------------------------
# Decoding (JointThresholdInDel, greedy): LLaDA2.2's edits plus DELETE / SPLIT
# --------------------------------------------------------------------------------------

@dataclass
class InDelKnobs:
    threshold: float = 0.5
    edit_threshold: float = 0.0
    max_post_edit_steps: int = 16


@dataclass
class InDelIds:
    mask: int
    delete: int
    split: int


@dataclass
class InDelState:
    """Where a block stands between its steps (reset for every block)."""
    fixed: int  # the block's prompt positions (its first `fixed`), never written
    is_orig_mask: list  # per position: the mask there descends from one the block started with
    post_edit_steps: int = 0  # steps that started with no original mask left
    update_steps: int = 0  # steps taken
    seen: set = None  # the input blocks of earlier steps (tuples)
    sampled: dict = None  # position -> tokens written there by earlier steps

    @staticmethod
    def start(block: list, fixed: int, mask_id: int) -> "InDelState":
        return InDelState(fixed, [i >= fixed and t == mask_id for i, t in enumerate(block)],
                          seen=set(), sampled={})


def argmax_excluding(row: torch.Tensor, excluded) -> int | None:
    """The first index of the largest logit outside `excluded`; None when every one is excluded."""
    best = None
    for t in torch.argsort(row, descending=True, stable=True).tolist():
        if t not in excluded:
            best = t
            break
    return best


def softmax_prob(row: torch.Tensor, t: int) -> float:
    return float(torch.exp(row[t] - torch.logsumexp(row, 0)))


def apply_edit_ops(written: list, before: list, is_orig_mask: list, fixed: int, ids: InDelIds):
    """DELETE / SPLIT of one step, applied after its writes. The prompt positions are copied;
    past them, a DELETE drops its position, a SPLIT becomes a new mask followed by the token the
    position held before the step (which keeps its original-mask flag), anything else stays.
    The result is cut back to the block size, or padded with new masks. Returns (tokens,
    is_orig_mask, padded, truncated)."""
    B = len(before)
    toks, orig = list(before[:fixed]), list(is_orig_mask[:fixed])
    for i in range(fixed, B):
        t = written[i]
        if t == ids.delete:
            continue
        if t == ids.split:
            toks += [ids.mask, before[i]]
            orig += [False, is_orig_mask[i]]
        else:
            toks.append(t)
            orig.append(is_orig_mask[i])
    padded, truncated = len(toks) < B, len(toks) > B
    toks, orig = toks[:B], orig[:B]
    orig += [False] * (B - len(toks))
    toks += [ids.mask] * (B - len(toks))
    return toks, orig, padded, truncated


class decision_gaps:
    """The margins of the comparisons one indel_step decides on, lowered into `gaps` (nothing
    when it is None). `pick(i, excluded)`: row i's best token outside `excluded` was taken, so
    the gap between its two largest logits outside `excluded` (the argmax, the best token but the
    mask, the best one not banned or not yet written there). `prob(d)`: a probability compared
    with a threshold or with another one, `d` apart. Unlike indel_margins it looks only at what
    the step compares, so a flip in float32 is possible only where one of these is small."""

    def __init__(self, gaps: dict | None, rows: torch.Tensor):
        self.gaps, self.rows = gaps, rows

    def pick(self, i: int, excluded):
        if self.gaps is None:
            return
        row = self.rows[i]
        k = min(len(excluded) + 2, row.shape[0])
        vals, idx = torch.topk(row, k)
        kept = [float(v) for v, t in zip(vals.tolist(), idx.tolist()) if t not in excluded][:2]
        if len(kept) == 2:
            self.gaps["logit"] = min(self.gaps["logit"], kept[0] - kept[1])

    def prob(self, d: float):
        if self.gaps is not None:
            self.gaps["prob"] = min(self.gaps["prob"], d)


def indel_step(block: list, logits: torch.Tensor, state: InDelState, knobs: InDelKnobs, ids: InDelIds,
               gaps: dict | None = None):
    """One JointThresholdInDel step over a block (SGLang's algorithm, docs/MODEL.md): `block` as
    the step's forward saw it, `logits` [B, V] its rows. Mutates `state`; returns (new block,
    open, branches) where branches names every rule the step took (the fixtures' coverage).
    With `gaps` ({"logit": x, "prob": y}), lowers each to the smallest margin of a comparison
    this step decided on (decision_gaps): how close it came to taking another decision."""
    B, fixed = len(block), state.fixed
    br = set()
    rows = logits.to(F64)
    x = [int(torch.argmax(rows[i])) for i in range(B)]  # first index on ties
    p = [softmax_prob(rows[i], x[i]) for i in range(B)]
    note = decision_gaps(gaps, rows)
    for i in range(fixed, B):
        note.pick(i, ())  # every argmax past the prompt is compared with the token there
    masked = [i >= fixed and block[i] == ids.mask for i in range(B)]
    orig_masked = [masked[i] and state.is_orig_mask[i] for i in range(B)]
    n_total, n_orig = sum(masked), sum(orig_masked)
    n_new = n_total - n_orig

    state.update_steps += 1
    if n_orig == 0:
        state.post_edit_steps += 1
    over_budget = state.post_edit_steps > knobs.max_post_edit_steps
    over_cap = state.update_steps > B + knobs.max_post_edit_steps
    final = over_budget or over_cap
    if over_budget:
        br.add("final_budget")
    if over_cap and not over_budget:
        br.add("final_step_cap")

    # An original mask is never written back as a mask (outside the final round): its pick is
    # the best other token, with that token's probability.
    if not final:
        for i in range(B):
            if orig_masked[i] and x[i] == ids.mask:
                note.pick(i, {ids.mask})
                x[i] = argmax_excluding(rows[i], {ids.mask})
                p[i] = softmax_prob(rows[i], x[i])
                br.add("mask_pick_replaced")

    # Mask to token.
    m2t = []
    if n_total > 0:
        cand = [i for i in range(B) if masked[i]]
        if final:
            m2t = cand
            br.add("m2t_final_all")
        elif n_orig > 0:
            need = 1 + n_new
            if n_new > 0:
                br.add("quota_raised")
            high = [i for i in cand if p[i] > knobs.threshold]
            for i in cand:
                note.prob(abs(p[i] - knobs.threshold))
            if len(high) >= need:
                m2t = high
                br.add("m2t_threshold")
            else:
                ranked = sorted(cand, key=lambda i: (-p[i], i))
                if need < n_total:  # the cut between the last mask taken and the first left
                    note.prob(p[ranked[need - 1]] - p[ranked[need]])
                m2t = sorted(ranked[:min(need, n_total)])
                br.add("m2t_top")
        else:
            m2t = cand
            br.add("m2t_new_masks_all")
    # Token to token: decoded, non-prompt positions whose pick differs, above the edit threshold.
    t2t = []
    for i in range(fixed, B):
        if masked[i] or x[i] == block[i]:
            continue
        note.prob(abs(p[i] - knobs.edit_threshold))
        if p[i] > knobs.edit_threshold:
            t2t.append(i)
        else:
            br.add("edit_declined")
    if t2t:
        br.add("edit")
    writes = sorted(set(m2t) | set(t2t))
    if not writes:
        br.add("no_change_exit")
        return list(block), False, br

    if final:
        # The final round writes no mask, DELETE or SPLIT: each becomes the best other token.
        banned = {ids.mask, ids.delete, ids.split}
        for i in writes:
            if x[i] in banned:
                note.pick(i, banned)
                alt = argmax_excluding(rows[i], banned)
                if alt is not None:
                    x[i] = alt
                br.add("final_ban")

    # Cycles: a step whose input block an earlier step of this block already saw rewrites its
    # least confident changing write with the best token not yet written there.
    key = tuple(block)
    if key in state.seen and not final:
        changing = [i for i in writes if x[i] != block[i]]
        if changing:
            least = sorted(changing, key=lambda i: (p[i], i))
            c = least[0]
            if len(least) > 1:
                note.prob(p[least[1]] - p[c])
            excluded = set(state.sampled.get(c, ()))
            if orig_masked[c]:
                excluded.add(ids.mask)
            note.pick(c, excluded)
            alt = argmax_excluding(rows[c], excluded)
            if alt is not None:
                x[c] = alt
            br.add("cycle_resample")
    state.seen.add(key)

    written = list(block)
    has_indel = False
    for i in writes:
        state.sampled.setdefault(i, set()).add(x[i])
        written[i] = x[i]
        if x[i] == ids.delete:
            has_indel = True
            br.add("delete")
        elif x[i] == ids.split:
            has_indel = True
            br.add("split")
    if has_indel:
        new, orig, padded, truncated = apply_edit_ops(written, block, state.is_orig_mask, fixed, ids)
        state.is_orig_mask = orig
        if padded:
            br.add("pad")
        if truncated:
            br.add("truncate")
    else:
        new = written
    return new, not final, br


@dataclass
class InDelResult:
    output_ids: list
    num_steps: int = 0
    branches: dict = None  # branch -> count
    min_logit_gap: float = math.inf  # smallest gap between a non-prompt row's top 3 logits
    min_prob_gap: float = math.inf  # smallest distance of a p from a threshold or another p
    # The same, over only the comparisons the steps decided on (decision_gaps), and the smallest
    # routing gap of a block-routed model's forwards (inf when not measured):
    decision_logit_gap: float = math.inf
    decision_prob_gap: float = math.inf
    route_gap: float = math.inf
    steps: list = None  # per step: its block, the block's tokens after it, open, its branches


def indel_margins(block, rows, fixed, knobs, ids, logit_gap, prob_gap):
    """How close this step came to a decision float32 could take otherwise: over the
    non-prompt rows, the gaps between their 3 largest logits (the argmax and the best token
    other than one or two excluded ones), and each p (of the argmax and of the best non-mask
    token) from the thresholds and from the other p's. Conservative: it looks at more than the
    step decides on."""
    masked, decoded = [], []  # the p's ranked against each other: among masks, among edits
    for i in range(fixed, len(block)):
        top = torch.topk(rows[i], 3).values
        logit_gap = min(logit_gap, float(top[0] - top[1]), float(top[1] - top[2]))
        order = torch.argsort(rows[i], descending=True).tolist()
        ps = [softmax_prob(rows[i], order[0]), softmax_prob(rows[i], next(t for t in order if t != ids.mask))]
        for v in ps:
            prob_gap = min(prob_gap, abs(v - knobs.threshold), abs(v - knobs.edit_threshold))
        (masked if block[i] == ids.mask else decoded).extend(ps)
    for group in (masked, decoded):
        group.sort()
        for x, y in zip(group, group[1:]):
            if y != x:
                prob_gap = min(prob_gap, y - x)
    return logit_gap, prob_gap


def indel_generate(model: Model, prompt_ids, block_size: int = 32, knobs: InDelKnobs = None,
                   max_new_tokens: int = 64, eos_id: int | None = None,
                   ids: InDelIds | None = None, route_gaps: bool = False) -> InDelResult:
    """JointThresholdInDel block diffusion, temperature 0, recomputing everything each step
    (no KV cache): per block, indel_step until it closes; generation stops after a block as
    for the other decoders (generation_done). With `route_gaps`, a block-routed model's
    routing near-ties are measured too (res.route_gap)."""
    knobs = knobs or InDelKnobs()
    if ids is None:
        c = model.cfg
        if c.mask_id is None or c.delete_id is None or c.split_id is None:
            raise SystemExit("JointThresholdInDel needs mask_token_id, delete_token_id and split_token_id in config.json")
        ids = InDelIds(c.mask_id, c.delete_id, c.split_id)
    B, P = block_size, len(prompt_ids)
    tokens = list(prompt_ids)
    res = InDelResult(output_ids=[], branches={}, steps=[])
    gaps = {"logit": math.inf, "prob": math.inf}
    measure_routes = route_gaps and model.cfg.expert_capacity is not None
    for blk in range(P // B, -(-(P + max_new_tokens) // B)):
        start, end = blk * B, (blk + 1) * B
        tokens = tokens + [ids.mask] * (end - len(tokens))
        fixed = max(0, min(B, P - start))
        state = InDelState.start(tokens[start:end], fixed, ids.mask)
        while True:
            if measure_routes:
                model.route_gaps = []
            rows = forward(model, tokens[:end], B)[start:end]
            if measure_routes:
                res.route_gap = min([res.route_gap] + model.route_gaps)
                model.route_gaps = None
            res.min_logit_gap, res.min_prob_gap = indel_margins(
                tokens[start:end], rows, fixed, knobs, ids, res.min_logit_gap, res.min_prob_gap)
            new, open_, br = indel_step(tokens[start:end], rows, state, knobs, ids, gaps)
            res.num_steps += 1
            for b in br:
                res.branches[b] = res.branches.get(b, 0) + 1
            tokens[start:end] = new
            res.steps.append({"block": blk, "tokens": list(new), "open": open_, "branches": sorted(br)})
            if not open_:
                break
        if generation_done(tokens[P:end], max_new_tokens, eos_id, ids.mask):
            break
    res.output_ids = output_ids(tokens[P:], max_new_tokens, eos_id)
    res.decision_logit_gap, res.decision_prob_gap = gaps["logit"], gaps["prob"]
    return res


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------

def sig7(x: float):
    """7 significant digits; None (JSON null) for inf, which strict JSON cannot hold."""
    return float(f"{x:.7g}") if math.isfinite(x) else None


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_header(model: Model, preset: str, seed: int) -> dict:
    return {"preset": preset, "seed": seed,
            "sha256": {os.path.basename(p): sha256_file(p) for p in model.files}}


def logits_cases(model: Model) -> list:
    """Deterministic inputs: lengths 1..70, block sizes 4/8/32 (a block-routed model: its
    routing block only), some mask tokens."""
    g = torch.Generator().manual_seed(1234)
    V, mask_id = model.cfg.vocab, model.cfg.mask_id
    text = ("The quick brown fox jumps over the lazy dog. Block diffusion models fill "
            "a block of masked tokens in a few parallel denoising steps, then move on.")
    text_ids = encode(model, text) if model.tokenizer is not None else []

    def rand_ids(n):
        return torch.randint(0, V, (n,), generator=g).tolist()

    if model.cfg.route_block is not None:
        R = model.cfg.route_block
        specs = [
            (f"len1_b{R}_short_routing_block", rand_ids(1), R),
            (f"len7_b{R}_short_routing_block", rand_ids(7), R),
            (f"len{R}_b{R}_one_routing_block", rand_ids(R), R),
            (f"len{R + 5}_b{R}_text_mid_block", (text_ids * 3)[: R + 5] if len(text_ids) else rand_ids(R + 5), R),
            (f"len{2 * R + 6}_b{R}", rand_ids(2 * R + 6), R),
            (f"len{2 * R}_b{R}_masked_block", rand_ids(R + 3) + [mask_id] * (R - 3), R),
            (f"len{3 * R}_b{R}_three_blocks", rand_ids(3 * R), R),
        ]
        return [logits_case(model, *spec) for spec in specs]
    specs = [
        ("len1_b4", rand_ids(1), 4),
        ("len7_b4_partial_last_block", rand_ids(7), 4),
        ("len16_b8_two_full_blocks", rand_ids(16), 8),
        ("len37_b8_mid_block_with_masks", rand_ids(32) + [mask_id] * 5, 8),
        ("len37_b32_text", (text_ids * 3)[:37] if len(text_ids) else rand_ids(37), 32),
        ("len70_b32", rand_ids(70), 32),
        ("len70_b8_masked_tail", rand_ids(64) + [mask_id] * 6, 8),
    ]
    return [logits_case(model, *spec) for spec in specs]


def logits_case(model: Model, name: str, ids: list, B: int) -> dict:
    logits = forward(model, ids, B)
    L = len(ids)
    positions = sorted({0, L // 2, L - 1})
    return {
        "name": name, "input_ids": ids, "block_size": B, "positions": positions,
        "logits": [[sig7(v) for v in logits[pos].tolist()] for pos in positions],
    }


@dataclass
class GreedySpec:
    name: str
    prompt: str  # "mid": ends strictly inside a block; "boundary": exactly on one; "chat"
    block_size: int
    steps: int
    threshold: float
    max_new_tokens: int
    eos: str = "config"  # "config", or "emitted[_after_mask]": a token the model emits mid-output


PROMPT_TEXTS = [
    "Once upon a time, in a small village by the sea, there lived an old fisherman",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "The capital of France is Paris. The capital of Germany is",
    "Write a short poem about the moon and the tides.",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,",
    "In mathematics, a prime number is a natural number greater than one",
    "She opened the door slowly and saw",
    "Q: What is the boiling point of water at sea level? A:",
]
CHAT_QUESTIONS = [
    "Tell me a story about a dragon.",
    "What is 2 + 2?",
    "Name three colors.",
    "How do I boil an egg?",
    "Why is the sky blue?",
    "Say hello in French.",
]

GREEDY_SPECS = [
    # name, prompt kind, B, steps (quota = B / steps), threshold, max_new_tokens
    GreedySpec("b4_q1_t095_mid_block", "mid", 4, 4, 0.95, 20),
    GreedySpec("b8_q1_t095_on_boundary", "boundary", 8, 8, 0.95, 40),
    GreedySpec("b8_q3_t05_steps3_mid_block", "mid", 8, 3, 0.5, 20),
    GreedySpec("b16_q2_t05_mid_block", "mid", 16, 8, 0.5, 70),
    GreedySpec("b16_q1_t02_on_boundary", "boundary", 16, 16, 0.2, 40),
    GreedySpec("b32_q4_t02_mid_block", "mid", 32, 8, 0.2, 70),
    GreedySpec("b32_q1_t095_on_boundary", "boundary", 32, 32, 0.95, 40),
    GreedySpec("b4_q2_t02_on_boundary", "boundary", 4, 2, 0.2, 20),
    GreedySpec("b8_q4_t095_mid_block", "mid", 8, 2, 0.95, 70),
    GreedySpec("chat_b32_q2_t05", "chat", 32, 16, 0.5, 40),
    GreedySpec("eos_cut_b8_q2_t05", "mid", 8, 4, 0.5, 40, eos="emitted"),
    GreedySpec("eos_cut_b4_q1_t095", "boundary", 4, 4, 0.95, 40, eos="emitted"),
    GreedySpec("eos_after_mask_b8_q2_t05", "mid", 8, 4, 0.5, 40, eos="emitted_after_mask"),
]


# LLaDA2.2 (block routing): the decode block is the routing block (config.json block_size, 32
# for the tiny 2.2 checkpoint make-model writes), so every case has that block size.
BLOCK_ROUTING_GREEDY_SPECS = [
    GreedySpec("br_b32_q1_t095_mid_block", "mid", 32, 32, 0.95, 40),
    GreedySpec("br_b32_q1_t095_on_boundary", "boundary", 32, 32, 0.95, 40),
    GreedySpec("br_b32_q4_t02_mid_block", "mid", 32, 8, 0.2, 70),
    GreedySpec("br_b32_q2_t05_on_boundary", "boundary", 32, 16, 0.5, 70),
    GreedySpec("br_b32_q8_t05_steps4_mid_block", "mid", 32, 4, 0.5, 40),
    GreedySpec("br_chat_b32_q2_t05", "chat", 32, 16, 0.5, 40),
    GreedySpec("br_eos_cut_b32_q2_t05", "mid", 32, 16, 0.5, 96, eos="emitted"),
    GreedySpec("br_eos_cut_b32_q4_t05_on_boundary", "boundary", 32, 8, 0.5, 96, eos="emitted"),
]


def prompt_variant(model: Model, spec: GreedySpec, variant: int):
    """(prompt_text or None, prompt_ids) for the `variant`-th try of a case. Tries go
    through the English texts first, then seeded random ids (which give the random tiny
    model more varied outputs). Ids trimmed or made up have prompt_text null."""
    B = spec.block_size
    if spec.prompt == "chat":
        user = CHAT_QUESTIONS[variant % len(CHAT_QUESTIONS)]
        if variant >= len(CHAT_QUESTIONS):
            user += f" ({variant})"
        text = CHAT_TEMPLATE.format(text=user)
        return text, encode(model, text)
    text = None
    if variant < len(PROMPT_TEXTS):
        text = PROMPT_TEXTS[(variant + len(spec.name)) % len(PROMPT_TEXTS)]
        ids = encode(model, text)
    else:
        seed = int.from_bytes(hashlib.sha256(f"{spec.name}/{variant}".encode()).digest()[:4], "little")
        g = torch.Generator().manual_seed(seed)
        n = int(torch.randint(3, 60, (1,), generator=g))
        # Ordinary tokens only: the specials (eos, mask, roles) sit above them in the vocab.
        top = min(t for t in (model.cfg.mask_id, model.cfg.eos_id) if t is not None)
        ids = torch.randint(0, top, (n,), generator=g).tolist()
    if spec.prompt == "boundary":
        n = max(B, (len(ids) // B) * B)
        return None, (ids * (n // len(ids) + 1))[:n]
    if len(ids) % B == 0:  # must end strictly inside a block
        return None, ids[:-1]
    return text, ids


def varied(out: list) -> bool:
    """The random tiny model often repeats one token; such outputs check little, so prefer
    prompts whose output has at least 3 distinct ids and no id above 75% of it."""
    if not out:
        return False
    top = max(out.count(t) for t in set(out))
    return len(set(out)) >= 3 and top <= 0.75 * len(out)


def greedy_case(model: Model, spec: GreedySpec, min_margin_ok: float, log) -> dict:
    fallback = None
    for variant in range(60):
        text, ids = prompt_variant(model, spec, variant)
        eos_id = model.cfg.eos_id
        if spec.eos != "config":
            # Run without EOS, then take a token (not the mask) that first appears mid-output,
            # at least a whole block before the end, so the cut is visible.
            probe = generate(model, ids, spec.block_size, spec.steps, spec.threshold,
                             spec.max_new_tokens, eos_id=None)
            out = probe.output_ids
            mask_id = model.cfg.mask_id
            firsts = [j for j, t in enumerate(out) if t != mask_id and out.index(t) == j]
            firsts = [j for j in firsts if 2 <= j < len(out) - spec.block_size]
            # "emitted": no mask before it, so decoding stops at the end of its block;
            # "emitted_after_mask": a mask precedes it, so decoding goes on to max_new.
            want_mask = spec.eos == "emitted_after_mask"
            firsts = [j for j in firsts if (mask_id in out[:j]) == want_mask]
            if not firsts:
                continue
            eos_id = out[firsts[len(firsts) // 2]]
        r = generate(model, ids, spec.block_size, spec.steps, spec.threshold,
                     spec.max_new_tokens, eos_id=eos_id)
        name = spec.name if spec.eos == "config" else f"{spec.name}_eos{eos_id}"
        solid = r.min_margin >= min_margin_ok and r.min_threshold_gap >= min_margin_ok
        log(f"  {name}: try {variant} P={len(ids)} out={len(r.output_ids)} steps={r.num_steps} "
            f"thr_steps={r.threshold_branch_steps} (strict {r.strict_threshold_steps}) "
            f"min_margin={r.min_margin:.3g} thr_gap={r.min_threshold_gap:.3g} "
            f"mask_preds={r.mask_predictions} varied={varied(r.output_ids)}")
        if not solid:
            continue  # fragile: an engine rounding difference could flip a decision
        case = {
            "name": name, "prompt_text": text, "prompt_ids": ids,
            "block_size": spec.block_size, "steps": spec.steps, "threshold": spec.threshold,
            "max_new_tokens": spec.max_new_tokens, "eos_id": eos_id,
            "output_ids": r.output_ids, "num_steps": r.num_steps,
            "threshold_branch_steps": r.threshold_branch_steps,
            "min_margin": sig7(r.min_margin),
            # Extra diagnostics (the test need not read them):
            "strict_threshold_branch_steps": r.strict_threshold_steps,
            "min_threshold_gap": sig7(r.min_threshold_gap),
            "mask_predictions": r.mask_predictions,
        }
        if varied(r.output_ids):
            return case
        fallback = fallback or case
    if fallback is None:
        raise SystemExit(f"could not find a non-fragile prompt for {spec.name}")
    log(f"  {spec.name}: no varied output found; keeping the first solid one")
    return fallback


@dataclass
class JointSpec:
    name: str
    prompt: str  # "mid" | "boundary" (see prompt_variant)
    block_size: int
    threshold: float
    edit_threshold: float
    max_post_edit_steps: int
    max_new_tokens: int
    want: str  # the branch this case must hit (JOINT_WANTS)
    eos: str = "config"  # or "emitted": a token the model emits mid-block becomes the EOS


# What each case is chosen for: a predicate over its JointResult.
JOINT_WANTS = {
    "edits": lambda r: r.edits > 0,
    "declined": lambda r: r.declined_edits > 0 and r.edits == 0,
    "budget": lambda r: r.budget_blocks > 0,
    "settled": lambda r: r.settled_blocks > 0,
    "fallback": lambda r: r.unmask_fallback_steps > 0 and r.edits > 0,
    "any": lambda r: True,
}

JOINT_SPECS = [
    # name, prompt kind, B, threshold, edit_threshold, max_post_edit_steps, max_new, want
    JointSpec("jt_b8_speed_mid_block", "mid", 8, 0.5, 0.0, 16, 24, "edits"),
    JointSpec("jt_b32_speed_on_boundary", "boundary", 32, 0.5, 0.0, 16, 40, "edits"),
    JointSpec("jt_b8_quality_on_boundary", "boundary", 8, 0.7, 0.5, 16, 40, "settled"),
    JointSpec("jt_b32_quality_mid_block", "mid", 32, 0.7, 0.5, 16, 70, "edits"),
    JointSpec("jt_b8_no_edit_fires_mid_block", "mid", 8, 0.5, 0.9, 16, 40, "declined"),
    JointSpec("jt_b8_budget1_mid_block", "mid", 8, 0.5, 0.0, 1, 30, "budget"),
    JointSpec("jt_b32_budget0_on_boundary", "boundary", 32, 0.3, 0.0, 0, 64, "budget"),
    JointSpec("jt_b32_budget2_mid_block", "mid", 32, 0.9, 0.1, 2, 64, "fallback"),
    JointSpec("jt_eos_b8_mid_block", "mid", 8, 0.5, 0.0, 16, 48, "any", eos="emitted"),
    JointSpec("jt_eos_b32_on_boundary", "boundary", 32, 0.7, 0.5, 16, 96, "any", eos="emitted"),
]


def joint_case(model: Model, spec: JointSpec, min_margin_ok: float, log) -> dict:
    """The first prompt variant whose decoding is solid (no near-tie the engine's float32
    could flip), hits the spec's branch and gives a varied output (else the first solid one
    that hits the branch)."""
    fallback = None
    run = lambda ids, eos: joint_threshold_generate(
        model, ids, spec.block_size, spec.threshold, spec.edit_threshold,
        spec.max_post_edit_steps, spec.max_new_tokens, eos_id=eos)
    for variant in range(80):
        _, ids = prompt_variant(model, spec, variant)
        text = None  # ids may be trimmed or repeated; the ids are the case
        eos_id = model.cfg.eos_id
        if spec.eos == "emitted":
            # A token first written mid-output in a block that is not the last, so the cut
            # and the early stop are both visible.
            out = run(ids, None).output_ids
            firsts = [j for j, t in enumerate(out) if t != model.cfg.mask_id and out.index(t) == j]
            firsts = [j for j in firsts if 2 <= j < len(out) - spec.block_size
                      and (len(ids) + j) % spec.block_size not in (0, spec.block_size - 1)]
            if not firsts:
                continue
            eos_id = out[firsts[len(firsts) // 2]]
        r = run(ids, eos_id)
        name = spec.name if spec.eos == "config" else f"{spec.name}_eos{eos_id}"
        hit = JOINT_WANTS[spec.want](r)
        if spec.eos == "emitted":
            hit = hit and len(r.output_ids) < spec.max_new_tokens and r.output_ids[-1] == eos_id
        solid = r.min_margin >= min_margin_ok and r.capped_blocks == 0
        log(f"  {name}: try {variant} P={len(ids)} out={len(r.output_ids)} steps={r.num_steps} "
            f"edits={r.edits} declined={r.declined_edits} post={r.post_edit_steps} "
            f"settled={r.settled_blocks} budget={r.budget_blocks} fallback={r.unmask_fallback_steps} "
            f"margin={r.min_margin:.3g} hit={hit} varied={varied(r.output_ids)}")
        if not (solid and hit):
            continue
        case = {
            "name": name, "prompt_text": text, "prompt_ids": ids,
            "block_size": spec.block_size, "threshold": spec.threshold,
            "edit_threshold": spec.edit_threshold, "max_post_edit_steps": spec.max_post_edit_steps,
            "max_new_tokens": spec.max_new_tokens, "eos_id": eos_id,
            "output_ids": r.output_ids, "num_steps": r.num_steps,
            # What the case exercises (the Rust test checks the fixtures cover every branch):
            "edits": r.edits, "edit_steps": r.edit_steps, "declined_edits": r.declined_edits,
            "post_edit_steps": r.post_edit_steps, "settled_blocks": r.settled_blocks,
            "budget_blocks": r.budget_blocks, "unmask_threshold_steps": r.unmask_threshold_steps,
            "unmask_fallback_steps": r.unmask_fallback_steps,
            "mask_predictions": r.mask_predictions, "min_margin": sig7(r.min_margin),
        }
        if varied(r.output_ids):
            return case
        fallback = fallback or case
    if fallback is None:
        raise SystemExit(f"could not find a solid prompt hitting {spec.want!r} for {spec.name}")
    log(f"  {spec.name}: no varied output found; keeping the first solid one")
    return fallback


def write_fixtures(model: Model, out_dir: str, preset: str, seed: int, min_margin_ok: float):
    log = lambda m: print(m, file=sys.stderr)
    os.makedirs(out_dir, exist_ok=True)
    header = model_header(model, preset, seed)

    model.route_gaps = []
    cases = logits_cases(model)
    log(f"logits: {len(cases)} cases, min routing gap {min(model.route_gaps, default=math.inf):.3g}")
    with open(os.path.join(out_dir, "logits.json"), "w") as f:
        json.dump({"model": header, "cases": cases}, f)
        f.write("\n")

    model.route_gaps = None  # skip routing bookkeeping for the decoding runs
    greedy = [greedy_case(model, spec, min_margin_ok, log) for spec in GREEDY_SPECS]
    with open(os.path.join(out_dir, "greedy.json"), "w") as f:
        json.dump({"model": header, "cases": greedy}, f, indent=1)
        f.write("\n")
    log(f"wrote {out_dir}/logits.json ({len(cases)} cases), {out_dir}/greedy.json ({len(greedy)} cases)")
    write_joint_fixtures(model, out_dir, header, min_margin_ok, log)


def write_block_routing_fixtures(model: Model, out_dir: str, preset: str, seed: int,
                                 min_margin_ok: float):
    """A block-routed (LLaDA2.2) checkpoint's fixtures: block_routing_logits.json and
    block_routing_greedy.json (LowConfidence), the header naming the family make-model wrote."""
    log = lambda m: print(m, file=sys.stderr)
    os.makedirs(out_dir, exist_ok=True)
    header = dict(model_header(model, preset, seed), family="llada2.2")
    model.route_gaps = []
    cases = logits_cases(model)
    log(f"block routing logits: {len(cases)} cases, min routing gap {min(model.route_gaps):.3g}")
    with open(os.path.join(out_dir, "block_routing_logits.json"), "w") as f:
        json.dump({"model": header, "cases": cases}, f)
        f.write("\n")
    model.route_gaps = None
    greedy = [greedy_case(model, spec, min_margin_ok, log) for spec in BLOCK_ROUTING_GREEDY_SPECS]
    with open(os.path.join(out_dir, "block_routing_greedy.json"), "w") as f:
        json.dump({"model": header, "cases": greedy}, f, indent=1)
        f.write("\n")
    log(f"wrote {out_dir}/block_routing_logits.json, {out_dir}/block_routing_greedy.json ({len(greedy)} cases)")


def write_joint_fixtures(model: Model, out_dir: str, header: dict, min_margin_ok: float, log):
    joint = [joint_case(model, spec, min_margin_ok, log) for spec in JOINT_SPECS]
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "joint_threshold.json")
    with open(path, "w") as f:
        json.dump({"model": header, "cases": joint}, f, indent=1)
        f.write("\n")
    log(f"wrote {path} ({len(joint)} cases)")


# --------------------------------------------------------------------------------------
# JointThresholdInDel policy fixtures (no model: seeded synthetic logits)
# --------------------------------------------------------------------------------------

# A small vocabulary: ordinary tokens 0..19 (19 doubles as the EOS), then the specials.
POLICY_VOCAB = 24
POLICY_IDS = InDelIds(mask=20, delete=21, split=22)
POLICY_EOS = 19
LOGIT_UNIT = 16  # logits are whole multiples of 1/16: exact in JSON, float32 and float64


@dataclass
class PolicySpec:
    name: str
    block_size: int
    fixed: int  # prompt positions at the start of the block
    knobs: InDelKnobs
    seed: int
    p_delete: float = 0.05  # per masked / edited position: the pick is DELETE
    p_split: float = 0.05  # ... SPLIT
    p_mask: float = 0.05  # ... the mask token (masked positions only)
    p_eos: float = 0.0  # ... the EOS (masked positions only)
    p_edit: float = 0.1  # a decoded position's pick differs from its token
    p_low: float = 0.5  # the pick's confidence is low (below 0.45)
    oscillate: bool = False  # once maskless, the first generated position flips between two tokens
    stall: bool = False  # original masks SPLIT, new masks DELETE: originals outlive the step cap


POLICY_SPECS = [
    PolicySpec("b8_speed_plain", 8, 3, InDelKnobs(0.5, 0.0, 16), 1),
    PolicySpec("b32_speed_mixed", 32, 0, InDelKnobs(0.5, 0.0, 16), 2),
    PolicySpec("b8_delete_heavy", 8, 2, InDelKnobs(0.5, 0.0, 16), 3, p_delete=0.3),
    PolicySpec("b8_split_heavy_budget1", 8, 1, InDelKnobs(0.5, 0.0, 1), 4, p_split=0.3, p_edit=0.3),
    PolicySpec("b8_budget0_edits", 8, 0, InDelKnobs(0.5, 0.0, 0), 5, p_edit=0.5),
    PolicySpec("b8_budget2_edits", 8, 4, InDelKnobs(0.5, 0.0, 2), 6, p_edit=0.6),
    PolicySpec("b8_quality_declined", 8, 2, InDelKnobs(0.7, 0.5, 16), 7, p_edit=0.5, p_low=0.6),
    PolicySpec("b8_mask_picks", 8, 0, InDelKnobs(0.5, 0.0, 16), 8, p_mask=0.35),
    PolicySpec("b8_cycle", 8, 2, InDelKnobs(0.5, 0.0, 16), 9, p_delete=0.0, p_split=0.0, oscillate=True),
    PolicySpec("b32_cycle", 32, 5, InDelKnobs(0.5, 0.0, 6), 10, oscillate=True),
    PolicySpec("b8_eos", 8, 3, InDelKnobs(0.5, 0.0, 16), 11, p_eos=0.25),
    PolicySpec("b32_eos_quality", 32, 7, InDelKnobs(0.7, 0.5, 16), 12, p_eos=0.05),
    PolicySpec("b8_step_cap", 8, 3, InDelKnobs(0.5, 0.0, 0), 13, stall=True),
    PolicySpec("b8_split_tail", 8, 1, InDelKnobs(0.5, 0.0, 4), 17, p_split=0.9, p_delete=0.0, p_mask=0.0, p_low=0.0),
    PolicySpec("b32_split_delete", 32, 0, InDelKnobs(0.3, 0.1, 3), 14, p_delete=0.15, p_split=0.15, p_edit=0.3),
    PolicySpec("b8_strict_threshold", 8, 1, InDelKnobs(0.9, 0.0, 2), 15, p_low=0.8, p_mask=0.2),
    PolicySpec("b32_low_conf", 32, 12, InDelKnobs(0.95, 0.9, 1), 16, p_low=0.9, p_edit=0.3),
]

# Every rule of indel_step, plus the end of generation inside a block: the fixture set must hit
# each (tests/indel_policy.rs checks this list too).
POLICY_BRANCHES = [
    "m2t_threshold", "m2t_top", "m2t_new_masks_all", "m2t_final_all", "quota_raised",
    "mask_pick_replaced", "edit", "edit_declined", "delete", "split", "pad", "truncate",
    "final_budget", "final_step_cap", "final_ban", "no_change_exit", "cycle_resample",
]


def policy_row(rng, target: int, conf: float) -> list:
    """A logits row (whole 1/16 units) whose argmax is `target` with about probability `conf`;
    the other logits are distinct, so no argmax ties."""
    others = rng.sample(range(-48, 1), POLICY_VOCAB - 1)
    z = sum(math.exp(v / LOGIT_UNIT) for v in others)
    lt = round(LOGIT_UNIT * math.log(conf / (1 - conf) * z))
    lt = max(lt, max(others) + 1)
    while lt in others:
        lt += 1
    row = others[:target] + [lt] + others[target:]
    return row


def policy_picks(rng, spec: PolicySpec, block: list, fixed: int, orig: list) -> list:
    """One step's synthetic logits rows (1/16 units) for `block`."""
    ids, B = POLICY_IDS, len(block)
    maskless = all(t != ids.mask for t in block[fixed:])
    rows = []
    for i, t in enumerate(block):
        conf = rng.uniform(0.05, 0.45) if rng.random() < spec.p_low else rng.uniform(0.55, 0.99)
        r = rng.random()
        if i < fixed:
            target = t if r < 0.5 else rng.choice([ids.delete, ids.split, rng.randrange(19)])
        elif spec.stall:
            if i == fixed:  # decoded first, then a weak edit every step (the cycle's victim)
                target = rng.randrange(19) if t == ids.mask else (t + 1 + rng.randrange(18)) % 19
                conf = rng.uniform(0.55, 0.99) if t == ids.mask else rng.uniform(0.1, 0.3)
            elif t == ids.mask:
                target, conf = (ids.split if orig[i] else ids.delete), rng.uniform(0.8, 0.99)
            else:
                target = t
        elif spec.oscillate and maskless:
            if i == fixed:
                target, conf = (3 if t == 4 else 4), 0.95
            else:
                target, conf = t, 0.97
        elif t == ids.mask:
            cuts = [spec.p_delete, spec.p_split, spec.p_mask, spec.p_eos]
            opts = [ids.delete, ids.split, ids.mask, POLICY_EOS]
            target = rng.randrange(19)
            acc = 0.0
            for c, o in zip(cuts, opts):
                acc += c
                if r < acc:
                    target = o
                    break
        elif r < spec.p_edit:
            q = rng.random()
            target = ids.delete if q < spec.p_delete * 3 else ids.split if q < (spec.p_delete + spec.p_split) * 3 else rng.randrange(19)
        else:
            target = t
        rows.append(policy_row(rng, target, conf))
    return rows


def policy_solid(rows: list, spec: PolicySpec) -> bool:
    """No probability the step compares (a pick's, or its best non-mask alternative's) within
    1e-4 of a threshold or 1e-5 of another, so float32 decides as float64 does."""
    ps = []
    for row in rows:
        t = torch.tensor(row, dtype=F64) / LOGIT_UNIT
        order = torch.argsort(t, descending=True).tolist()
        ps.append(softmax_prob(t, order[0]))
        alt = next(v for v in order if v != POLICY_IDS.mask)
        ps.append(softmax_prob(t, alt))
    for v in ps:
        if min(abs(v - spec.knobs.threshold), abs(v - spec.knobs.edit_threshold)) < 1e-4:
            return False
    ps.sort()
    return all(b - a > 1e-5 or b == a for a, b in zip(ps, ps[1:]))


def policy_case(spec: PolicySpec) -> dict:
    import random

    rng = random.Random(spec.seed)
    ids, B = POLICY_IDS, spec.block_size
    block = [rng.randrange(19) for _ in range(spec.fixed)] + [ids.mask] * (B - spec.fixed)
    prompt = list(block[: spec.fixed])
    state = InDelState.start(block, spec.fixed, ids.mask)
    steps = []
    while True:
        for _ in range(200):
            rows = policy_picks(rng, spec, block, spec.fixed, state.is_orig_mask)
            if policy_solid(rows, spec):
                break
        else:
            raise SystemExit(f"{spec.name}: no solid step found")
        logits = torch.tensor(rows, dtype=F64) / LOGIT_UNIT
        new, open_, br = indel_step(block, logits, state, spec.knobs, ids)
        steps.append({"input": block, "logits_x16": rows, "output": new, "open": open_, "branches": sorted(br)})
        block = new
        if not open_:
            break
        if len(steps) > B + spec.knobs.max_post_edit_steps + 1:
            raise SystemExit(f"{spec.name}: the block did not close within its step limit")
    generated = block[spec.fixed:]
    max_new = B + 8  # the EOS decides, not the length
    done = generation_done(generated, max_new, POLICY_EOS, ids.mask)
    return {
        "name": spec.name, "block_size": B, "fixed": spec.fixed, "prompt": prompt,
        "threshold": spec.knobs.threshold, "edit_threshold": spec.knobs.edit_threshold,
        "max_post_edit_steps": spec.knobs.max_post_edit_steps,
        "eos_id": POLICY_EOS, "max_new_tokens": max_new,
        "steps": steps,
        # After the block: whether generation ends here (an EOS with no mask before it) and the
        # output it gives.
        "generation_done": done, "output_ids": output_ids(generated, max_new, POLICY_EOS),
        "eos_in_block": POLICY_EOS in generated,
    }


def write_indel_policy_fixtures(out_dir: str, log):
    cases = [policy_case(spec) for spec in POLICY_SPECS]
    hit = {b for c in cases for s in c["steps"] for b in s["branches"]}
    missing = [b for b in POLICY_BRANCHES if b not in hit]
    if missing:
        raise SystemExit(f"the policy fixtures miss branches {missing}; change POLICY_SPECS")
    if not any(c["eos_in_block"] and c["generation_done"] for c in cases):
        raise SystemExit("no policy case ends generation on an EOS inside its block")
    if {c["block_size"] for c in cases} != {8, 32}:
        raise SystemExit("the policy cases must use blocks of 8 and 32")
    for c in cases:
        counts = {}
        for s in c["steps"]:
            for b in s["branches"]:
                counts[b] = counts.get(b, 0) + 1
        log(f"  {c['name']}: {len(c['steps'])} steps, eos_done={c['generation_done']} {counts}")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "indel_policy.json")
    with open(path, "w") as f:
        json.dump({"vocab": POLICY_VOCAB, "mask_id": POLICY_IDS.mask, "delete_id": POLICY_IDS.delete,
                   "split_id": POLICY_IDS.split, "logit_unit": LOGIT_UNIT, "branches": POLICY_BRANCHES,
                   "cases": cases}, f, separators=(",", ":"))
        f.write("\n")
    log(f"wrote {path} ({len(cases)} cases, {sum(len(c['steps']) for c in cases)} steps)")


INDEL_SPECS = [
    # name, prompt kind, B, threshold, edit_threshold, max_post_edit_steps, max_new
    ("indel_b8_speed_mid_block", "mid", 8, 0.5, 0.0, 16, 24),
    ("indel_b32_budget2_on_boundary", "boundary", 32, 0.5, 0.0, 2, 32),
    ("indel_b8_quality_on_boundary", "boundary", 8, 0.7, 0.5, 16, 40),
    ("indel_b8_budget1_mid_block", "mid", 8, 0.5, 0.0, 1, 30),
    ("indel_b32_budget0_mid_block", "mid", 32, 0.7, 0.0, 0, 40),
]


def write_indel_engine_fixtures(model: Model, out_dir: str, header: dict, log, min_logit_gap: float,
                                min_prob_gap: float):
    """End-to-end JointThresholdInDel generations of a model that routes as LLaDA2.0 (the tiny
    fixture checkpoint), with two ordinary ids standing in for DELETE and SPLIT: the two the
    model predicts most often over a probe, so that its edits fire. The decoder does not care
    which model feeds it; this checks the engine's handling of blocks whose layout changes
    (its K/V cache above all) until a 2.2 checkpoint loads. Each case is the first prompt
    variant whose decoding has no near-tie (indel_margins) and that deletes and splits."""
    c = model.cfg
    probe = generate(model, encode(model, PROMPT_TEXTS[0]) if model.tokenizer else list(range(1, 12)),
                     8, 8, 0.0, 48, eos_id=None).output_ids
    counts = {}
    for t in probe:
        if t not in (c.mask_id, c.eos_id):
            counts[t] = counts.get(t, 0) + 1
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    ids = InDelIds(c.mask_id, ranked[0], ranked[1])
    log(f"  delete id {ids.delete}, split id {ids.split} (probe counts {counts[ids.delete]}, {counts[ids.split]})")
    cases = []
    for name, kind, B, th, et, mp, max_new in INDEL_SPECS:
        spec = JointSpec(name, kind, B, th, et, mp, max_new, "any")
        found = None
        for variant in range(60):
            _, prompt = prompt_variant(model, spec, variant)
            r = indel_generate(model, prompt, B, InDelKnobs(th, et, mp), max_new, eos_id=c.eos_id, ids=ids)
            solid = r.min_logit_gap >= min_logit_gap and r.min_prob_gap >= min_prob_gap
            log(f"  {name}: try {variant} P={len(prompt)} out={len(r.output_ids)} steps={r.num_steps} "
                f"gaps={r.min_logit_gap:.3g}/{r.min_prob_gap:.3g} {r.branches}")
            if solid and "delete" in r.branches and "split" in r.branches:
                found = (prompt, r)
                break
        if found is None:
            log(f"  {name}: no solid prompt that deletes and splits; left out")
            continue
        prompt, r = found
        cases.append({"name": name, "prompt_ids": prompt, "block_size": B, "threshold": th,
                      "edit_threshold": et, "max_post_edit_steps": mp, "max_new_tokens": max_new,
                      "eos_id": c.eos_id, "output_ids": r.output_ids, "num_steps": r.num_steps,
                      "branches": dict(sorted(r.branches.items())), "min_logit_gap": sig7(r.min_logit_gap),
                      "min_prob_gap": sig7(r.min_prob_gap)})
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "indel_engine.json")
    with open(path, "w") as f:
        json.dump({"model": header, "delete_id": ids.delete, "split_id": ids.split, "cases": cases}, f, indent=1)
        f.write("\n")
    log(f"wrote {path} ({len(cases)} cases)")


@dataclass
class InDel22Spec:
    name: str
    prompt: str  # "mid" | "boundary" (see prompt_variant)
    threshold: float
    edit_threshold: float
    max_post_edit_steps: int
    max_new_tokens: int
    want: tuple  # branches the case must take (every one)
    eos: str = "config"  # or "emitted": a token the model emits mid-output becomes the EOS
    tries: int = 60  # prompt variants searched


# The end-to-end cases on the tiny LLaDA2.2 checkpoint. Its decode block is its routing block (32),
# so every case has that block size; the cases differ in the prompt's end (mid-block, on a
# boundary), the knobs, and the rules each is chosen for.
INDEL22_SPECS = [
    InDel22Spec("indel22_speed_mid_block", "mid", 0.5, 0.0, 16, 64, ("delete", "split", "pad", "truncate")),
    InDel22Spec("indel22_speed_on_boundary", "boundary", 0.5, 0.0, 16, 64, ("delete", "split")),
    InDel22Spec("indel22_quality_on_boundary", "boundary", 0.7, 0.5, 16, 64, ("edit_declined", "final_ban", "delete", "split")),
    InDel22Spec("indel22_settles_mid_block", "mid", 0.95, 0.0, 1, 64, ("no_change_exit",), tries=120),
    InDel22Spec("indel22_step_cap_on_boundary", "boundary", 0.95, 0.0, 1, 64, ("final_step_cap", "split"), tries=120),
    InDel22Spec("indel22_mask_pick_mid_block", "mid", 0.95, 0.0, 1, 64, ("mask_pick_replaced",), tries=200),
    InDel22Spec("indel22_budget0_on_boundary", "boundary", 0.5, 0.0, 0, 48, ("m2t_final_all", "quota_raised", "split")),
    InDel22Spec("indel22_budget2_mid_block", "mid", 0.9, 0.1, 2, 70, ("final_ban", "delete", "split")),
    InDel22Spec("indel22_eos_mid_block", "mid", 0.5, 0.0, 16, 96, ("delete", "split"), eos="emitted"),
    InDel22Spec("indel22_eos_on_boundary", "boundary", 0.7, 0.5, 4, 96, ("split",), eos="emitted"),
]


def emitted_eos(out: list, B: int, mask_id: int):
    """A token of an EOS-free output to act as the EOS: its first appearance is past the first
    two tokens, a whole block before the end (the cut is visible) and not at a block's last
    position (it ends the output inside its block); the middle such token, None if there is none."""
    firsts = [j for j, t in enumerate(out) if t != mask_id and out.index(t) == j]
    firsts = [j for j in firsts if 2 <= j < len(out) - B and j % B != B - 1]
    return out[firsts[len(firsts) // 2]] if firsts else None


def indel22_case(model: Model, spec: InDel22Spec, ids: InDelIds, screen: dict, log):
    """The first prompt variant whose decoding is solid (no decision within the screen's margins,
    no routing near-tie) and takes every branch of spec.want; None when none does."""
    B = model.cfg.route_block
    knobs = InDelKnobs(spec.threshold, spec.edit_threshold, spec.max_post_edit_steps)
    jspec = JointSpec(spec.name, spec.prompt, B, spec.threshold, spec.edit_threshold,
                      spec.max_post_edit_steps, spec.max_new_tokens, "any")
    for variant in range(spec.tries):
        _, prompt = prompt_variant(model, jspec, variant)
        eos_id = model.cfg.eos_id
        if spec.eos == "emitted":
            probe = indel_generate(model, prompt, B, knobs, spec.max_new_tokens, eos_id=None, ids=ids)
            eos_id = emitted_eos(probe.output_ids, B, ids.mask)
            if eos_id is None:
                continue
        r = indel_generate(model, prompt, B, knobs, spec.max_new_tokens, eos_id=eos_id, ids=ids, route_gaps=True)
        solid = (r.decision_logit_gap >= screen["min_logit_gap"] and r.decision_prob_gap >= screen["min_prob_gap"]
                 and r.route_gap >= screen["min_route_gap"])
        hit = all(b in r.branches for b in spec.want)
        if spec.eos == "emitted":
            hit = hit and eos_id in r.output_ids and len(r.output_ids) < spec.max_new_tokens
        log(f"  {spec.name}: try {variant} P={len(prompt)} out={len(r.output_ids)} steps={r.num_steps} "
            f"gaps={r.decision_logit_gap:.3g}/{r.decision_prob_gap:.3g}/{r.route_gap:.3g} solid={solid} hit={hit}")
        if not (solid and hit):
            continue
        return {"name": spec.name, "prompt_ids": prompt, "block_size": B, "threshold": spec.threshold,
                "edit_threshold": spec.edit_threshold, "max_post_edit_steps": spec.max_post_edit_steps,
                "max_new_tokens": spec.max_new_tokens, "eos_id": eos_id, "eos_emitted": spec.eos == "emitted",
                "want": list(spec.want), "output_ids": r.output_ids, "num_steps": r.num_steps,
                "branches": dict(sorted(r.branches.items())),
                "decision_logit_gap": sig7(r.decision_logit_gap), "decision_prob_gap": sig7(r.decision_prob_gap),
                "route_gap": sig7(r.route_gap), "steps": r.steps}
    return None


def write_indel_fixtures(model: Model, out_dir: str, header: dict, log, screen: dict):
    """End-to-end JointThresholdInDel generations of the tiny LLaDA2.2 checkpoint (`dllm
    make-model --preset tiny --family llada2.2`): block routing, and the checkpoint's own
    `<|delete|>` / `<|split|>` ids. Each case is the first prompt variant that takes the
    branches its spec names with no decision near a tie (decision_gaps: the logit gaps of every
    pick and the probability gaps of every comparison the steps made) and no routing near-tie.
    Each records its steps (block, tokens after the step, open, branches) for the engine to
    match one by one. The set must take DELETE, SPLIT, padding, truncation and edits, end an
    output on an EOS inside a block, and have prompts ending mid-block and on a boundary."""
    c = model.cfg
    if c.expert_capacity is None or c.delete_id is None or c.split_id is None:
        raise SystemExit("indel-fixtures wants a LLaDA2.2 checkpoint (expert_capacity, delete_token_id, split_token_id)")
    ids = InDelIds(c.mask_id, c.delete_id, c.split_id)
    cases = []
    for spec in INDEL22_SPECS:
        case = indel22_case(model, spec, ids, screen, log)
        if case is None:
            log(f"  {spec.name}: no solid prompt takes {spec.want}; left out")
            continue
        log(f"  {spec.name}: {case['num_steps']} steps, {case['branches']}")
        cases.append(case)
    hit = {b for case in cases for b in case["branches"]}
    need = ["delete", "split", "pad", "truncate", "edit"]
    if any(b not in hit for b in need):
        raise SystemExit(f"the 2.2 cases miss {[b for b in need if b not in hit]}")
    if not any(case["eos_emitted"] for case in cases):
        raise SystemExit("no 2.2 case ends its output on an EOS inside a block")
    if {len(case["prompt_ids"]) % c.route_block == 0 for case in cases} != {True, False}:
        raise SystemExit("the 2.2 cases need prompts ending mid-block and on a boundary")
    not_hit = [b for b in POLICY_BRANCHES if b not in hit]
    log(f"  branches not taken by any case: {not_hit}")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "indel.json")
    with open(path, "w") as f:
        json.dump({"model": dict(header, family="llada2.2"), "mask_id": ids.mask, "delete_id": ids.delete,
                   "split_id": ids.split, "screen": screen, "branches": POLICY_BRANCHES, "not_hit": not_hit,
                   "cases": cases}, f, separators=(",", ":"))
        f.write("\n")
    log(f"wrote {path} ({len(cases)} cases, {sum(case['num_steps'] for case in cases)} steps)")


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------

def parse_ids(s: str) -> list:
    return [int(x) for x in s.replace(" ", "").split(",") if x]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    a = sub.add_parser("logits", help="print the last position's logits")
    a.add_argument("--model", required=True)
    a.add_argument("--ids", required=True, help="comma-separated token ids")
    a.add_argument("--block-size", type=int, default=32)

    g = sub.add_parser("generate", help="greedy LowConfidence decoding; prints output ids")
    g.add_argument("--model", required=True)
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt-ids")
    src.add_argument("--prompt")
    g.add_argument("--chat", action="store_true", help="wrap --prompt in the LLaDA2 chat template")
    g.add_argument("--block-size", type=int, default=32)
    g.add_argument("--steps", type=int, default=None, help="steps per block (default: block size)")
    g.add_argument("--threshold", type=float, default=0.95)
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--eos-id", type=int, default=None, help="default: config.json eos_token_id")
    g.add_argument("--verbose", action="store_true", help="print step statistics to stderr")
    g.add_argument("--dllm-algorithm", default="LowConfidence", choices=["LowConfidence", "JointThreshold", "JointThresholdInDel"])
    g.add_argument("--edit-threshold", type=float, default=0.0, help="JointThreshold(InDel) only")
    g.add_argument("--max-post-edit-steps", type=int, default=16, help="JointThreshold(InDel) only")

    fx = sub.add_parser("fixtures", help="write tests/fixtures/{logits,greedy}.json")
    fx.add_argument("--model", required=True)
    fx.add_argument("--out", default="tests/fixtures")
    fx.add_argument("--preset", default="tiny", help="recorded in the fixtures' header")
    fx.add_argument("--seed", type=int, default=0, help="recorded in the fixtures' header")
    fx.add_argument("--min-margin", type=float, default=1e-3,
                    help="reject greedy cases whose logit / confidence / threshold gap is below this")
    fx.add_argument("--only", choices=["joint_threshold"], default=None,
                    help="write only this fixture file (the others stay as they are)")

    rm = sub.add_parser("route-margins",
                        help="block routing's per-layer decisions and margins (a 2.2 checkpoint)")
    rm.add_argument("--model", required=True)
    src = rm.add_mutually_exclusive_group(required=True)
    src.add_argument("--ids", help="comma-separated token ids (one forward from position 0)")
    src.add_argument("--fixture", help="a logits fixture file: every case's input")
    rm.add_argument("--case", default=None, help="with --fixture: only this case")
    rm.add_argument("--block-size", type=int, default=32)
    rm.add_argument("--bf16-router-input", action="store_true",
                    help="round the router's input to bf16 as the CUDA router sees it (the rest float64)")

    ip = sub.add_parser("indel-policy-fixtures",
                        help="write tests/fixtures/indel_policy.json (synthetic; no model)")
    ip.add_argument("--out", default="tests/fixtures")

    ig = sub.add_parser("indel-fixtures",
                        help="write indel.json: JointThresholdInDel end to end on the tiny LLaDA2.2 checkpoint")
    ig.add_argument("--model", required=True)
    ig.add_argument("--out", default="tests/fixtures")
    ig.add_argument("--preset", default="tiny", help="recorded in the fixtures' header")
    ig.add_argument("--seed", type=int, default=0, help="recorded in the fixtures' header")
    ig.add_argument("--min-logit-gap", type=float, default=1e-4,
                    help="reject a case whose steps pick a token less than this above the next logit")
    ig.add_argument("--min-prob-gap", type=float, default=1e-5,
                    help="reject a case whose steps compare probabilities (or one with a threshold) closer than this")
    ig.add_argument("--min-route-gap", type=float, default=5e-6,
                    help="reject a case whose forwards route on scores closer than this at a cut")

    ie = sub.add_parser("indel-engine-fixtures",
                        help="write indel_engine.json: JointThresholdInDel over a 2.0 checkpoint, "
                             "two ordinary ids as the edit tokens")
    ie.add_argument("--model", required=True)
    ie.add_argument("--out", default="tests/fixtures")
    ie.add_argument("--preset", default="tiny", help="recorded in the fixtures' header")
    ie.add_argument("--seed", type=int, default=0, help="recorded in the fixtures' header")
    ie.add_argument("--min-logit-gap", type=float, default=1e-3)
    ie.add_argument("--min-prob-gap", type=float, default=1e-5)

    args = ap.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr)
    if args.cmd == "indel-policy-fixtures":
        write_indel_policy_fixtures(args.out, log)
        return
    model = load_model(args.model)
    if args.cmd == "indel-engine-fixtures":
        write_indel_engine_fixtures(model, args.out, model_header(model, args.preset, args.seed), log,
                                    args.min_logit_gap, args.min_prob_gap)
        return
    if args.cmd == "indel-fixtures":
        write_indel_fixtures(model, args.out, model_header(model, args.preset, args.seed), log,
                             {"min_logit_gap": args.min_logit_gap, "min_prob_gap": args.min_prob_gap,
                              "min_route_gap": args.min_route_gap})
        return

    if args.cmd == "route-margins":
        if model.cfg.expert_capacity is None:
            raise SystemExit("route-margins: this model does not route per block")
        model.bf16_router_input = args.bf16_router_input
        if args.ids is not None:
            print_route_margins(model, "ids", parse_ids(args.ids), args.block_size)
            return
        with open(args.fixture) as f:
            cases = [c for c in json.load(f)["cases"] if args.case in (None, c["name"])]
        scale = max(print_route_margins(model, c["name"], c["input_ids"], c["block_size"], c) for c in cases)
        print(f"largest input scale S over {len(cases)} case(s): {scale:.4f}")
        return
    if args.cmd == "logits":
        logits = forward(model, parse_ids(args.ids), args.block_size)[-1]
        print(json.dumps([sig7(v) for v in logits.tolist()]))
        print(f"argmax {int(torch.argmax(logits))}", file=sys.stderr)
    elif args.cmd == "generate":
        if args.prompt_ids is not None:
            ids = parse_ids(args.prompt_ids)
        else:
            text = CHAT_TEMPLATE.format(text=args.prompt) if args.chat else args.prompt
            ids = encode(model, text)
        eos = model.cfg.eos_id if args.eos_id is None else args.eos_id
        if args.dllm_algorithm == "JointThresholdInDel":
            knobs = InDelKnobs(args.threshold, args.edit_threshold, args.max_post_edit_steps)
            r = indel_generate(model, ids, args.block_size, knobs, args.max_new_tokens, eos_id=eos)
            print(",".join(str(t) for t in r.output_ids))
            if args.verbose:
                print(f"prompt_len={len(ids)} {r}", file=sys.stderr)
            return
        if args.dllm_algorithm == "JointThreshold":
            r = joint_threshold_generate(model, ids, args.block_size, args.threshold,
                                         args.edit_threshold, args.max_post_edit_steps,
                                         args.max_new_tokens, eos_id=eos)
            print(",".join(str(t) for t in r.output_ids))
            if args.verbose:
                print(f"prompt_len={len(ids)} {r}", file=sys.stderr)
            return
        r = generate(model, ids, args.block_size, args.steps, args.threshold,
                     args.max_new_tokens, eos_id=eos)
        print(",".join(str(t) for t in r.output_ids))
        if args.verbose:
            print(f"prompt_len={len(ids)} num_steps={r.num_steps} threshold_branch_steps="
                  f"{r.threshold_branch_steps} min_margin={r.min_margin:.4g} "
                  f"min_threshold_gap={r.min_threshold_gap:.4g} mask_predictions={r.mask_predictions}",
                  file=sys.stderr)
    elif model.cfg.expert_capacity is not None:
        write_block_routing_fixtures(model, args.out, args.preset, args.seed, args.min_margin)
    elif args.only == "joint_threshold":
        write_joint_fixtures(model, args.out, model_header(model, args.preset, args.seed),
                             args.min_margin, lambda m: print(m, file=sys.stderr))
    else:
        write_fixtures(model, args.out, args.preset, args.seed, args.min_margin)


if __name__ == "__main__":
    main()
