#!/usr/bin/env python3
"""The strongest PyTorch baseline we know how to write for one LLaDA2 denoising step.

One step = the whole model over the current block of every request (N requests, B
block tokens each, a cached prefix of L tokens per request), then the unmask decision.
It follows docs/MODEL.md; shapes come from src/make_model.rs's presets; the random
weights use make_model.rs's `init_for` std per tensor kind (seeded, generated on the GPU).

What the fast path does (all static shapes, no host sync, whole step in a CUDA graph):
  * bf16 weights and activations, fp32 RMSNorm/RoPE math, fp32 router. The router GEMM
    runs as an fp32 GEMM with TF32 allowed: its inputs are bf16 values (h and the gate
    weight), which TF32 represents exactly, and accumulation is fp32, so this is the
    fp32 router, only on tensor cores.
  * Attention: K/V of the block are written into a preallocated cache
    [layers, N, L+B, NKV, D]; `scaled_dot_product_attention` reads the cache in place
    (a strided view, no copy). Default "pack": there is no mask, so the G = NH/NKV query
    heads that share one KV head are packed into the query-length axis
    (q [N, NKV, G*B, D]) - exact, no K/V expansion and 4x longer query tiles.
    Alternatives: "gqa" (enable_gqa=True), "expand" (K/V expanded to NH heads).
    The prefix's K/V are written before timing by the model itself from random prompt ids, a
    block at a time (prefill_cache; --no-prompt-cache: random K/V), so a block's tokens route
    with the correlation real context gives them, as `dllm bench step`'s do.
  * MoE: group-limited top-k routing with torch ops; the (token, expert) pairs are
    sorted by expert (torch.sort), group end offsets come from torch.searchsorted over
    the sorted ids (= cumsum of the per-expert counts, without bincount's host sync);
    every token routes to exactly top_k experts, so the sorted buffer has a static
    T*top_k rows (no padding rows needed). Gate and up are one `torch._grouped_mm`
    (weights stacked [E, H, 2I]), SiLU*up*routing weight, then the down `_grouped_mm`,
    then an fp32 index_add of the rows back to their tokens (--combine scatter; the
    inverse-permutation gather + sum over the k slots is --combine gather, ~7% slower at
    batch 64 on H100).
    By default the shared expert rides in the same grouped GEMMs as group E (every token
    routes to it with weight 1) - one grouped GEMM pair per layer instead of four GEMMs.
  * torch._grouped_mm (CUDA, bf16, sm90) has no offset-alignment rule for our case
    (2D row-major A x 3D B, see GroupMMCommon.cuh: the 16-byte checks apply only to
    column-major A / 2Dx2D / 3Dx2D), empty groups are allowed, offsets are int32
    *end* indices of each group.
  * Head: final RMSNorm, lm_head, argmax + softmax probability of it; compiled variants
    fuse this into one pass over the logits, eager uses log_softmax.gather.
  * MoE, variant "triton" (tools/fused_moe_triton.py, the fused-MoE algorithm the serving
    stacks run MoE models with, our own implementation): the same routing ops, then one
    custom op (torch.library.custom_op, opaque to torch.compile, no graph break) that runs
      - the alignment: the T*(top_k+1) (token, expert) slots bucketed by expert, each
        expert's run padded to a multiple of BLOCK_M (tl.histogram, cumsum, an atomic cursor
        per expert); padding rows hold an out-of-range sentinel; buffers sized for the worst
        case T*(top_k+1) + G*(BLOCK_M-1); the padded row count stays on the device and
        M-blocks past it exit at once. One program, or count/runs/scatter over many (tuned);
      - gate+up: one launch, program = (M-block, N-block): gathers its tokens' rows of h,
        bf16 tl.dot against the block's expert's gate and up columns (fp32 accumulators),
        SiLU(gate)*up in the epilogue, bf16 [slots, I];
      - down: one launch, times the routing weight in the epilogue, then either per-slot bf16
        rows summed over the k slots in fp32 by the compiled code (fused with the residual
        add), or fp32 atomics into [T, H] (tuned);
    the shared expert rides as group E here too (or --shared-separate). Tile configs
    (BLOCK_M 16/32/64 as the rows per routed expert allow; BLOCK_N/K, warps, stages: 10
    gate+up and 7x2 down candidates; the alignment and combine choices) are timed per batch
    on the GPU at startup, on the first MoE layer's real operands (h and routing recorded
    by an eager run of the same inputs), each candidate as a CUDA graph of 10 launches; the
    fastest whose output matches a per-expert fp32 loop (rel err < 2e-2) is used, printed,
    and recorded in the JSON (runs[].triton: config, us per MoE layer, every timing).
    Bounded by --tune-budget seconds a batch; the Triton compiles (~1 s a config) are paid
    once, later batches hit the cache. --triton-config skips tuning.
Variants (pick with --variants, the fastest correct one is reported as "best"):
  compile  : each layer / the head through torch.compile (inductor, no cudagraphs), then
             the whole step captured in one CUDA graph by us.
  triton   : as compile, with the MoE through the Triton fused MoE above.
  eager    : plain eager ops, whole step captured in one CUDA graph.
If a variant fails its exception is printed and the next one is tried. All variants share
the routing code, so the experts touched per layer (counted by an eager copy of the step
over the timed inputs) hold for each; the JSON records them per batch with mask_frac.
--mask-frac 0: random non-special ids everywhere except the last position of each request,
which stays masked (the unmask decision needs one). The routers are first balanced as training
balances them (--balanced-router, the default, as `dllm bench`'s): with random ids that is
realistic routing, ~160 of 256 experts a block at mini's batch 1 (--no-balanced-router: ~80).

Measured before the triton variant existed (H100 80GB HBM3, torch 2.11.0+cu130, mini, prefix
1024, block 32, mask-frac 0.5):
  batch 1: 6.59 ms, 4: 7.94 ms, 16: 11.08 ms, 64: 21.48 ms (compile); eager+graph 9.90 /
  12.00 / 17.48 / 38.07 ms. --layout nk, --shared-separate, --attn gqa were within ~3%
  (3-layer runs); mode max-autotune-no-cudagraphs did not finish compiling in 3 minutes.
Measured with it (H200, 2026-11-30, mask-frac 0, --variants compile,triton --tune-budget 30):
  triton 4.77 / 5.80 / 7.72 / 16.40 ms at batch 1 / 4 / 16 / 64, compile 6.52 / 7.73 / 10.04 /
  19.45 ms (docs/perf/issue13/baseline-mini.json).

  python3 tools/baseline_torch.py --preset mini --batch 1,4,16,64 --json OUT.json
  python3 tools/baseline_torch.py --preset mini --batch 1,4,16,64 --mask-frac 0 --json OUT0.json
  python3 tools/baseline_torch.py --check                  # CPU, tiny config, vs a float64 loop
  TRITON_INTERPRET=1 python3 tools/baseline_torch.py --check   # + the triton MoE, interpreted
  python3 tools/baseline_torch.py --check --device cuda    # mini shape, bf16, vs a float64 loop
  python3 tools/fused_moe_triton.py                        # the kernels alone vs a per-expert loop
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # tools/fused_moe_triton.py

torch.set_grad_enabled(False)


# --------------------------------------------------------------------------------------
# Config (mirrors src/make_model.rs `preset`)
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cfg:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int          # dense MLP width (layers < first_dense)
    moe_inter: int      # expert width
    vocab: int
    experts: int = 256
    top_k: int = 8
    n_group: int = 8
    topk_group: int = 4
    shared: int = 1
    scaling: float = 2.5
    first_dense: int = 1
    rotary: float = 0.5
    rope_theta: float = 600000.0
    eps: float = 1e-6
    mask_id: int = 156895

    @property
    def rot(self):
        return int(self.head_dim * self.rotary)


PRESETS = {
    "mini": Cfg(2048, 20, 16, 4, 128, 5120, 512, 157184),
    "flash": Cfg(4096, 32, 32, 4, 128, 9216, 1024, 157184),
    # The --check config (make_model.rs "tiny": hidden 64, 3 layers, 4 heads, 2 kv heads,
    # head_dim 16, 16 experts in 4 groups, top-4, topk_group 2).
    "tiny": Cfg(64, 3, 4, 2, 16, 128, 32, 288, experts=16, top_k=4, n_group=4, topk_group=2, mask_id=287),
}


# --------------------------------------------------------------------------------------
# Weights (make_model.rs init_for: norms N(1, .1); expert_bias N(0, .1) f32; embeddings
# N(0, 1); lm_head N(0, 5/sqrt(H)); router N(0, 2/sqrt(fan_in)); the rest N(0, 1/sqrt(fan_in)))
# --------------------------------------------------------------------------------------

class Weights:
    pass


def make_weights(cfg, n_layers, device, dtype, seed, layout="kn", shared_in_grouped=True):
    """Expert stacks: w13 gate rows then up rows. layout "kn": stored [E, H, 2I] / [E, I, H]
    (N contiguous), the operand of _grouped_mm as is. layout "nk": stored [E, 2I, H] /
    [E, H, I] (HF layout, K contiguous), passed to _grouped_mm as a transposed view."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)

    def rnd(shape, std, mean=0.0, dt=dtype):
        t = torch.randn(shape, generator=g, device=device, dtype=dt)
        t.mul_(std)
        if mean:
            t.add_(mean)
        return t

    H, D, NH, NKV = cfg.hidden, cfg.head_dim, cfg.heads, cfg.kv_heads
    E, Im = cfg.experts, cfg.moe_inter
    W = Weights()
    W.layout = layout
    W.shared_in_grouped = shared_in_grouped
    W.embed = rnd((cfg.vocab, H), 1.0)
    W.norm = rnd((H,), 0.1, 1.0)
    W.lm_head = rnd((cfg.vocab, H), 5.0 / math.sqrt(H))
    W.layers = []
    for i in range(n_layers):
        lw = {}
        lw["ln1"] = rnd((H,), 0.1, 1.0)
        lw["ln2"] = rnd((H,), 0.1, 1.0)
        lw["wqkv"] = rnd(((NH + 2 * NKV) * D, H), 1.0 / math.sqrt(H))
        lw["qn"] = rnd((D,), 0.1, 1.0)
        lw["kn"] = rnd((D,), 0.1, 1.0)
        lw["wo"] = rnd((H, NH * D), 1.0 / math.sqrt(NH * D))
        if i < cfg.first_dense:
            I = cfg.inter
            lw["dense"] = True
            lw["w_gu"] = rnd((2 * I, H), 1.0 / math.sqrt(H))   # gate rows, then up rows
            lw["w_d"] = rnd((H, I), 1.0 / math.sqrt(I))
        else:
            lw["dense"] = False
            lw["router"] = rnd((E, H), 2.0 / math.sqrt(H))
            lw["router_f32"] = lw["router"].float()             # the fp32 router operand
            lw["bias"] = rnd((E,), 0.1, dt=torch.float32)
            Si = Im * cfg.shared
            if shared_in_grouped:
                assert cfg.shared == 1, "shared expert in the grouped GEMM needs width == expert width"
            G = E + (1 if shared_in_grouped else 0)
            if layout == "kn":
                lw["w13"] = rnd((G, H, 2 * Im), 1.0 / math.sqrt(H))
                lw["w2"] = rnd((G, Im, H), 1.0 / math.sqrt(Im))
            else:
                lw["w13"] = rnd((G, 2 * Im, H), 1.0 / math.sqrt(H))
                lw["w2"] = rnd((G, H, Im), 1.0 / math.sqrt(Im))
            if not shared_in_grouped:
                lw["s_gu"] = rnd((2 * Si, H), 1.0 / math.sqrt(H))
                lw["s_d"] = rnd((H, Si), 1.0 / math.sqrt(Si))
        W.layers.append(lw)
    return W


def expert_hf(W, lw, e, cfg):
    """Expert e's (gate [Im,H], up [Im,H], down [H,Im]) in the HF layout, whatever the storage.
    e == experts means the shared expert."""
    Im = cfg.moe_inter
    if e == cfg.experts and not W.shared_in_grouped:
        gu, d = lw["s_gu"], lw["s_d"]
        return gu[:gu.shape[0] // 2], gu[gu.shape[0] // 2:], d
    if W.layout == "kn":
        w13 = lw["w13"][e].t()      # [2Im, H]
        d = lw["w2"][e].t()         # [H, Im]
    else:
        w13 = lw["w13"][e]
        d = lw["w2"][e]
    return w13[:Im], w13[Im:], d


def gmm_operands(W, lw):
    """The [G, K, N] operands of the two grouped GEMMs."""
    if W.layout == "kn":
        return lw["w13"], lw["w2"]
    return lw["w13"].transpose(1, 2), lw["w2"].transpose(1, 2)


def make_cache(cfg, n_layers, N, L, B, device, dtype, seed):
    g = torch.Generator(device=device)
    g.manual_seed(seed + 1)
    shape = (n_layers, N, L + B, cfg.kv_heads, cfg.head_dim)
    kc = torch.randn(shape, generator=g, device=device, dtype=dtype)
    vc = torch.randn(shape, generator=g, device=device, dtype=dtype)
    return kc, vc


def prefill_cache(cfg, W, n_layers, N, L, B, kc, vc, dev, seed, opts):
    """Writes positions [0, L) of kc / vc as the engine's prefill does: random prompt ids (no
    mask token) through the model itself, a block of B positions at a time, each attending to
    the blocks before it and to itself (block-causal; eager steps, whose K/V writes land at the
    block's positions). A block of a request then attends to context its own tokens' hidden
    states share, as `dllm bench step`'s do, and routes as correlated as they do: over random
    K/V the tokens of a block route about independently (mini: ~162 distinct experts a block,
    uniform independent picks give 256 (1 - (255/256)^256) = 161.8), where the engine's,
    balanced the same way, route to ~150."""
    for p0 in range(0, L, B):
        b = min(B, L - p0)
        cos, sin = rope_tables(cfg, p0, b, N, dev)
        step = build_step(cfg, W, N, p0, b, opts, n_layers, cos, sin, compile_mode=None)
        g = torch.Generator(device="cpu")
        g.manual_seed(seed + 50000 + p0)
        ids = torch.randint(0, cfg.vocab, (N, b), generator=g).to(dev)
        step(ids, torch.zeros((N, b), dtype=torch.bool, device=dev), kc, vc)


def make_inputs(cfg, N, B, device, seed, mask_frac=0.5):
    """A block part-way through decoding: random token ids, a random mask_frac of the
    positions still masked (they all hold mask_id, so they share one embedding)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    ids = torch.randint(0, cfg.vocab, (N, B), generator=g)
    masked = torch.rand((N, B), generator=g) < mask_frac
    masked[:, -1] = True
    ids[masked] = cfg.mask_id
    return ids.to(device), masked.to(device)


def rope_tables(cfg, L, B, N, device):
    r2 = cfg.rot // 2
    pos = torch.arange(L, L + B, dtype=torch.float64)
    inv = cfg.rope_theta ** (-2.0 * torch.arange(r2, dtype=torch.float64) / cfg.rot)
    a = pos[:, None] * inv[None, :]                                   # [B, r2]
    cos = a.cos().float().repeat(N, 1)[:, None, :].to(device)         # [T, 1, r2]
    sin = a.sin().float().repeat(N, 1)[:, None, :].to(device)
    return cos, sin


# --------------------------------------------------------------------------------------
# Grouped GEMM: torch._grouped_mm, or (CPU check / last resort) a loop with the same offsets
# --------------------------------------------------------------------------------------

def grouped_mm_loop(a, b, offs):
    """Reference semantics of torch._grouped_mm(a [R,K], b [G,K,N], offs [G] end indices).
    Reads offs on the host: CPU check only (or an eager no-graph last resort)."""
    out = a.new_zeros((a.shape[0], b.shape[-1]))
    start = 0
    for gi, end in enumerate(offs.tolist()):
        if end > start:
            out[start:end] = a[start:end] @ b[gi]
        start = end
    return out


def grouped_mm_works(device, dtype):
    try:
        a = torch.randn(48, 64, device=device, dtype=dtype)
        b = torch.randn(3, 64, 32, device=device, dtype=dtype)
        offs = torch.tensor([16, 16, 48], device=device, dtype=torch.int32)  # incl. an empty group
        y = torch._grouped_mm(a, b, offs=offs)
        ref = grouped_mm_loop(a.float(), b.float(), offs)
        err = (y.float() - ref).norm() / ref.norm()
        if not bool(err < 2e-2):
            raise RuntimeError(f"torch._grouped_mm mismatch {float(err):.3e}")
        bt = torch.randn(3, 32, 64, device=device, dtype=dtype).transpose(1, 2)  # K-contiguous B
        y = torch._grouped_mm(a, bt, offs=offs)
        ref = grouped_mm_loop(a.float(), bt.float(), offs)
        err = (y.float() - ref).norm() / ref.norm()
        if not bool(err < 2e-2):
            raise RuntimeError(f"torch._grouped_mm (transposed B) mismatch {float(err):.3e}")
        return True
    except Exception as e:  # noqa: BLE001
        print(f"[baseline] torch._grouped_mm unusable on {device}/{dtype}: {type(e).__name__}: {e}",
              file=sys.stderr)
        return False


# --------------------------------------------------------------------------------------
# The optimized step
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Opts:
    attn: str = "pack"          # pack | gqa | expand
    gmm: str = "grouped_mm"     # grouped_mm | loop
    fused_head: bool = False    # one-pass max/argmax/sum-exp head (for torch.compile)
    top2: str = "max"           # group score: max + second max (fusable) | topk
    combine: str = "scatter"    # scatter (fp32 index_add) | gather (inverse permutation + sum)
    moe: str = "grouped_mm"     # grouped_mm (torch ops + gmm) | triton (tools/fused_moe_triton.py)
    moe_cfg: tuple = ()         # moe == "triton": the tile config, fused_moe_triton.flatten()


def build_step(cfg, W, N, L, B, opts, n_layers, cos, sin, compile_mode=None, stats=None, probe=None, scores=None):
    """Returns step(ids [N,B], masked [N,B], kc, vc) -> (logits [T,V], new_ids, new_masked, conf).
    stats / probe / scores (eager runs only): a list that gets each MoE layer's count of routed
    experts / the first MoE layer's (h, expert id per slot, routing weight per slot, w13, w2) /
    each MoE layer's (its weights lw, biased scores b [T, E] f32)."""
    H, D, NH, NKV = cfg.hidden, cfg.head_dim, cfg.heads, cfg.kv_heads
    G = NH // NKV
    T = N * B
    S = L + B
    E, K, Im = cfg.experts, cfg.top_k, cfg.moe_inter
    r2 = cfg.rot // 2
    rot = cfg.rot
    eps = cfg.eps
    scale = 1.0 / math.sqrt(D)
    shared_in = W.shared_in_grouped
    ng, tg = cfg.n_group, cfg.topk_group
    Kx = K + (1 if shared_in else 0)
    n_groups_gemm = E + (1 if shared_in else 0)
    dev = W.embed.device
    # expert ids sorted as int16 (2 radix passes instead of 8 for int64)
    key_dt = torch.int16 if n_groups_gemm < 2 ** 15 else torch.int32
    group_ids = torch.arange(n_groups_gemm, device=dev, dtype=key_dt)
    ar_rows = torch.arange(T * Kx, device=dev, dtype=torch.int64)
    gmm = torch._grouped_mm if opts.gmm == "grouped_mm" else grouped_mm_loop
    if opts.moe == "triton":
        import fused_moe_triton as fmt
        moe_op = fmt.op()
        moe_cfg = [int(v) for v in opts.moe_cfg]
        moe_atomic = bool(moe_cfg[11])

    def rms(x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)

    def qk_norm_rope(t, w):  # t [T, nh, D]
        tf = t.float()
        tf = tf * torch.rsqrt(tf.pow(2).mean(-1, keepdim=True) + eps) * w.float()
        x1, x2 = tf[..., :r2], tf[..., r2:rot]
        out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, tf[..., rot:]], dim=-1)
        return out.to(t.dtype)

    def attention(x, lw, kc_l, vc_l):
        h = rms(x, lw["ln1"])
        qkv = F.linear(h, lw["wqkv"])
        q = qkv[:, :NH * D].view(T, NH, D)
        k = qkv[:, NH * D:(NH + NKV) * D].view(T, NKV, D)
        v = qkv[:, (NH + NKV) * D:].view(T, NKV, D)
        q = qk_norm_rope(q, lw["qn"])
        k = qk_norm_rope(k, lw["kn"])
        kc_l[:, L:S] = k.view(N, B, NKV, D)
        vc_l[:, L:S] = v.view(N, B, NKV, D)
        kk = kc_l[:, :S].transpose(1, 2)      # [N, NKV, S, D], a view of the cache
        vv = vc_l[:, :S].transpose(1, 2)
        if opts.attn == "pack":
            qp = q.view(N, B, NKV, G, D).permute(0, 2, 3, 1, 4).reshape(N, NKV, G * B, D)
            o = F.scaled_dot_product_attention(qp, kk, vv, scale=scale)
            o = o.view(N, NKV, G, B, D).permute(0, 3, 1, 2, 4).reshape(T, NH * D)
        else:
            qh = q.view(N, B, NH, D).transpose(1, 2)
            if opts.attn == "gqa":
                o = F.scaled_dot_product_attention(qh, kk, vv, scale=scale, enable_gqa=True)
            else:
                ke = kk[:, :, None].expand(N, NKV, G, S, D).reshape(N, NH, S, D)
                ve = vv[:, :, None].expand(N, NKV, G, S, D).reshape(N, NH, S, D)
                o = F.scaled_dot_product_attention(qh, ke, ve, scale=scale)
            o = o.transpose(1, 2).reshape(T, NH * D)
        return x + F.linear(o, lw["wo"])

    def dense_layer(x, lw, kc_l, vc_l):
        x = attention(x, lw, kc_l, vc_l)
        h = rms(x, lw["ln2"])
        gu = F.linear(h, lw["w_gu"])
        I = gu.shape[1] // 2
        a = F.silu(gu[:, :I]) * gu[:, I:]
        return x + F.linear(a, lw["w_d"])

    def moe_layer(x, lw, kc_l, vc_l):
        x = attention(x, lw, kc_l, vc_l)
        h = rms(x, lw["ln2"])
        # router in fp32 (TF32 on the GPU is exact here: both operands are bf16 values)
        logits = F.linear(h.float(), lw["router_f32"])
        s = torch.sigmoid(logits)
        b = s + lw["bias"]
        bg = b.view(T, ng, E // ng)
        if opts.top2 == "topk":
            gscore = bg.topk(2, dim=-1).values.sum(-1)                           # [T, ng]
        else:  # same value, as fusable max reductions: max + second max (ties: max twice)
            m1 = bg.amax(-1, keepdim=True)
            ism = bg == m1
            m2 = bg.masked_fill(ism, float("-inf")).amax(-1, keepdim=True)
            m2 = torch.where(ism.sum(-1, keepdim=True) > 1, m1, m2)
            gscore = (m1 + m2).squeeze(-1)
        gidx = gscore.topk(tg, dim=-1).indices                                   # [T, tg]
        gkeep = torch.zeros((T, ng), device=x.device, dtype=torch.bool).scatter_(1, gidx, True)
        bm = b.view(T, ng, E // ng).masked_fill(~gkeep[:, :, None], float("-inf")).view(T, E)
        idx = bm.topk(K, dim=-1).indices                                         # [T, K]
        w = s.gather(1, idx)
        w = w * (cfg.scaling / w.sum(-1, keepdim=True))
        if shared_in:
            idx = torch.cat([idx, torch.full((T, 1), E, device=x.device, dtype=idx.dtype)], 1)
            w = torch.cat([w, torch.ones((T, 1), device=x.device, dtype=w.dtype)], 1)
        if scores is not None:  # eager calibration pass only (--balanced-router)
            scores.append((lw, b.float().clone()))
        if stats is not None:  # eager statistics pass only (never in the timed graph)
            stats.append(torch.zeros(E, device=x.device, dtype=torch.bool)
                         .scatter_(0, idx[:, :K].reshape(-1), True).sum())
        if probe is not None and not probe:
            probe.append((h.clone(), idx.reshape(-1).to(torch.int32), w.reshape(-1).float().contiguous(),
                          *gmm_operands(W, lw)))
        if opts.moe == "triton":
            # tools/fused_moe_triton.py: alignment, gate+up(+SiLU*up), down(*weight) as one op
            w13, w2 = gmm_operands(W, lw)
            y = moe_op(h.contiguous(), idx.reshape(-1).to(torch.int32), w.reshape(-1).float(),
                       w13, w2, Kx, moe_cfg)
            if moe_atomic:      # [T, H] fp32 sums
                out = y.to(x.dtype)
            else:               # [T*Kx, H] per-slot rows: fp32 sum over the slots (fused by inductor)
                out = y.view(T, Kx, H).float().sum(1).to(x.dtype)
            if not shared_in:
                sg = F.linear(h, lw["s_gu"])
                Si = sg.shape[1] // 2
                out = out + F.linear(F.silu(sg[:, :Si]) * sg[:, Si:], lw["s_d"])
            return x + out
        flat = idx.reshape(-1).to(key_dt)
        sorted_e, order = torch.sort(flat)
        offs = torch.searchsorted(sorted_e, group_ids, right=True, out_int32=True)   # group ends
        tok = order // Kx
        xs = h.index_select(0, tok)                                              # [T*Kx, H]
        w13, w2 = gmm_operands(W, lw)
        gu = gmm(xs, w13, offs)                                                  # [T*Kx, 2Im]
        ws = w.reshape(-1).index_select(0, order)
        a = (F.silu(gu[:, :Im].float()) * gu[:, Im:].float() * ws[:, None]).to(x.dtype)
        y = gmm(a, w2, offs)                                                     # [T*Kx, H]
        if opts.combine == "gather":   # inverse permutation, then a sum over the k slots
            inv = torch.empty_like(order).scatter_(0, order, ar_rows)
            out = y.index_select(0, inv).view(T, Kx, H).sum(1)
        else:                          # scatter-add into fp32 rows
            out = torch.zeros((T, H), device=x.device, dtype=torch.float32).index_add_(0, tok, y.float())
            out = out.to(x.dtype)
        if not shared_in:
            sg = F.linear(h, lw["s_gu"])
            Si = sg.shape[1] // 2
            out = out + F.linear(F.silu(sg[:, :Si]) * sg[:, Si:], lw["s_d"])
        return x + out

    def head(x, ids, masked):
        xf = rms(x, W.norm)
        logits = F.linear(xf, W.lm_head)                                         # [T, V]
        if opts.fused_head:
            mx, am = logits.max(-1)
            conf = 1.0 / torch.exp(logits.float() - mx.float()[:, None]).sum(-1)
        else:
            am = logits.argmax(-1)
            conf = torch.log_softmax(logits, -1).gather(1, am[:, None]).squeeze(1).float().exp()
        conf = conf.view(N, B)
        x0 = am.view(N, B)
        cm = conf.masked_fill(~masked, -1.0)
        above = masked & (conf > 0.95)
        any_above = above.any(1, keepdim=True)
        top1 = F.one_hot(cm.argmax(1), B).bool() & masked
        transfer = torch.where(any_above, above, top1) & (x0 != cfg.mask_id)
        new_ids = torch.where(transfer, x0, ids)
        new_masked = masked & ~transfer
        return logits, new_ids, new_masked, conf

    if compile_mode:
        import torch._dynamo as dynamo
        dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 256)
        if hasattr(dynamo.config, "recompile_limit"):
            dynamo.config.recompile_limit = max(dynamo.config.recompile_limit, 256)
        kw = dict(dynamic=False, fullgraph=False)
        if compile_mode != "default":
            kw["mode"] = compile_mode
        dense_layer = torch.compile(dense_layer, **kw)
        moe_layer = torch.compile(moe_layer, **kw)
        head = torch.compile(head, **kw)

    def step(ids, masked, kc, vc, stats=None):
        x = F.embedding(ids.reshape(-1), W.embed)
        for i in range(n_layers):
            lw = W.layers[i]
            fn = dense_layer if lw["dense"] else moe_layer
            x = fn(x, lw, kc[i], vc[i])
        return head(x, ids, masked)

    return step


# --------------------------------------------------------------------------------------
# Plain, obviously-correct reference (per token, per head, per expert; float64)
# --------------------------------------------------------------------------------------

def reference_step(cfg, W, ids, kc, vc, L, B, n_layers, dt=torch.float64, round_to=None):
    """Follows docs/MODEL.md literally. kc/vc: the caches before the step (prefix used).
    round_to (optional, unused by --check) rounds stored activations to that dtype."""
    H, D, NH, NKV = cfg.hidden, cfg.head_dim, cfg.heads, cfg.kv_heads
    N = ids.shape[0]
    E = cfg.experts
    f = lambda t: t.to(dt)  # noqa: E731
    r = (lambda t: t.to(round_to).to(dt)) if round_to is not None else (lambda t: t)  # noqa: E731

    def rms(x, w):
        return r(x / torch.sqrt((x * x).mean() + cfg.eps) * f(w))

    def rope(x, pos):
        rr = cfg.rot
        out = x.clone()
        for i in range(rr // 2):
            a = pos * cfg.rope_theta ** (-2.0 * i / rr)
            c, s = math.cos(a), math.sin(a)
            out[i] = x[i] * c - x[i + rr // 2] * s
            out[i + rr // 2] = x[i + rr // 2] * c + x[i] * s
        return out

    def qknorm_rope(x, w, pos):
        return r(rope(x / torch.sqrt((x * x).mean() + cfg.eps) * f(w), pos))

    def mlp(x, wg, wu, wd, scale=1.0):
        g, u = r(f(wg) @ x), r(f(wu) @ x)
        return r(f(wd) @ r(F.silu(g) * u * scale))

    xs = [[f(W.embed[int(ids[n, j])]) for j in range(B)] for n in range(N)]
    for li in range(n_layers):
        lw = W.layers[li]
        q, k, v = {}, {}, {}
        for n in range(N):
            for j in range(B):
                h = rms(xs[n][j], lw["ln1"])
                qkv = r(f(lw["wqkv"]) @ h)
                for hh in range(NH):
                    q[n, j, hh] = qknorm_rope(qkv[hh * D:(hh + 1) * D], lw["qn"], L + j)
                for g in range(NKV):
                    o = (NH + g) * D
                    k[n, j, g] = qknorm_rope(qkv[o:o + D], lw["kn"], L + j)
                    o = (NH + NKV + g) * D
                    v[n, j, g] = qkv[o:o + D]
        for n in range(N):
            for j in range(B):
                heads_out = []
                for hh in range(NH):
                    g = hh // (NH // NKV)
                    keys = torch.cat([f(kc[li, n, :L, g]), torch.stack([k[n, jj, g] for jj in range(B)])])
                    vals = torch.cat([f(vc[li, n, :L, g]), torch.stack([v[n, jj, g] for jj in range(B)])])
                    p = torch.softmax(keys @ q[n, j, hh] / math.sqrt(D), dim=0)
                    heads_out.append(r(p @ vals))
                x = r(xs[n][j] + r(f(lw["wo"]) @ torch.cat(heads_out)))
                h = rms(x, lw["ln2"])
                if lw["dense"]:
                    I = lw["w_gu"].shape[0] // 2
                    y = mlp(h, lw["w_gu"][:I], lw["w_gu"][I:], lw["w_d"])
                else:
                    s = torch.sigmoid(f(lw["router"]) @ h)
                    b = s + f(lw["bias"])
                    per = E // cfg.n_group
                    gscore = [sorted(b[gi * per:(gi + 1) * per].tolist())[-2:] for gi in range(cfg.n_group)]
                    gscore = [sum(t) for t in gscore]
                    keep = sorted(range(cfg.n_group), key=lambda gi: -gscore[gi])[:cfg.topk_group]
                    cand = [e for gi in keep for e in range(gi * per, (gi + 1) * per)]
                    chosen = sorted(cand, key=lambda e: -float(b[e]))[:cfg.top_k]
                    tot = sum(float(s[e]) for e in chosen)
                    y = torch.zeros_like(h)
                    for e in chosen:
                        y = y + mlp(h, *expert_hf(W, lw, e, cfg), scale=float(s[e]) / tot * cfg.scaling)
                    y = r(y + mlp(h, *expert_hf(W, lw, E, cfg)))       # shared expert
                xs[n][j] = r(x + y)
    logits = torch.stack([f(W.lm_head) @ rms(xs[n][j], W.norm) for n in range(N) for j in range(B)])
    return logits


# --------------------------------------------------------------------------------------
# CUDA graph capture, timing
# --------------------------------------------------------------------------------------

def capture(step, ids, masked, kc, vc, warmup, pool=None):
    kc0, vc0 = kc[:, :, -1:].clone(), vc[:, :, -1:].clone()  # noqa: F841 (the block slots get rewritten anyway)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(max(2, warmup)):
            step(ids, masked, kc, vc)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, pool=pool):
        out = step(ids, masked, kc, vc)
    torch.cuda.synchronize()
    return g, out


def time_graphs(graphs, iters, warmup):
    for _ in range(warmup):
        for g in graphs:
            g.replay()
    torch.cuda.synchronize()
    evs = []
    for i in range(iters):
        g = graphs[i % len(graphs)]
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        evs.append((a, b))
    torch.cuda.synchronize()
    ts = [a.elapsed_time(b) for a, b in evs]
    return statistics.median(ts), ts


# --------------------------------------------------------------------------------------
# --balanced-router: the routers' expert bias balanced as training balances it, as
# src/bench/router_balance.rs does for dllm (the same update, passes and steps), so that both
# steps route a block to about as many experts as a trained router does (~150 of 256 at mini's
# batch 1, against ~80 as drawn)
# --------------------------------------------------------------------------------------

BALANCE_ROUNDS, BALANCE_PASSES, BALANCE_FIRST_STEP, BALANCE_STEP_SHRINK = 2, 100, 0.04, 0.96
BALANCE_ROWS = 2048


def select_experts(b, cfg):
    """The router's group-limited top-k of biased scores b [T, E] (as moe_layer's)."""
    T, E = b.shape
    ng, tg = cfg.n_group, cfg.topk_group
    gscore = b.view(T, ng, E // ng).topk(2, dim=-1).values.sum(-1)
    gidx = gscore.topk(tg, dim=-1).indices
    gkeep = torch.zeros((T, ng), device=b.device, dtype=torch.bool).scatter_(1, gidx, True)
    bm = b.view(T, ng, E // ng).masked_fill(~gkeep[:, :, None], float("-inf")).view(T, E)
    return bm.topk(cfg.top_k, dim=-1).indices


def balancing_offsets(b, cfg):
    """Bias offsets under which the rows of b pick every expert about equally often: load under
    the mean -> up, BALANCE_PASSES times over these scores with a shrinking step."""
    T, E = b.shape
    mean = T * cfg.top_k / E
    d = torch.zeros(E, device=b.device, dtype=torch.float32)
    step = BALANCE_FIRST_STEP
    for _ in range(BALANCE_PASSES):
        load = torch.bincount(select_experts(b + d, cfg).reshape(-1), minlength=E).float()
        d += step * ((mean - load) / mean).clamp(-1.0, 1.0)
        step *= BALANCE_STEP_SHRINK
    return d


def routing_spread(scores, cfg, N, B):
    """(distinct experts a request's block routes to, busiest expert's load over the mean),
    averaged over the MoE layers of one eager step's recorded scores."""
    per_block, busiest = 0.0, 0.0
    for _, b in scores:
        idx = select_experts(b, cfg).view(N, B * cfg.top_k)
        per_block += sum(len(torch.unique(idx[n])) for n in range(N)) / N
        load = torch.bincount(idx.reshape(-1), minlength=cfg.experts).float()
        busiest += float(load.max() / (N * B * cfg.top_k / cfg.experts))
    return per_block / len(scores), busiest / len(scores)


def balance_router(cfg, W, n_layers, L, B, dev, seed, opts, rounds=BALANCE_ROUNDS, prompt_cache=False):
    """Moves every MoE layer's lw["bias"] (in place) as training would; returns the spread as
    drawn and after (on fresh inputs). prompt_cache: each forward's prefix written from random
    prompts first (prefill_cache, under the biases so far), else random K/V."""
    N = max(1, -(-BALANCE_ROWS // B))
    kc, vc = make_cache(cfg, n_layers, N, L, B, dev, torch.bfloat16, seed + 7)
    cos, sin = rope_tables(cfg, L, B, N, dev)

    def forward(i):
        if prompt_cache:
            prefill_cache(cfg, W, n_layers, N, L, B, kc, vc, dev, seed + 7000 + 100 * i, opts)
        scores = []
        step = build_step(cfg, W, N, L, B, opts, n_layers, cos, sin, compile_mode=None, scores=scores)
        ids, masked = make_inputs(cfg, N, B, dev, seed + 9000 + i, mask_frac=0.0)
        step(ids, masked, kc, vc)
        return scores

    before = None
    for r in range(rounds):
        scores = forward(r)
        if before is None:
            before = routing_spread(scores, cfg, N, B)
        for lw, b in scores:
            lw["bias"] += balancing_offsets(b, cfg)
    after = routing_spread(forward(rounds), cfg, N, B)
    del kc, vc
    return {"rows": N * B, "before": {"experts_per_block": before[0], "busiest_over_mean": before[1]},
            "after": {"experts_per_block": after[0], "busiest_over_mean": after[1]}}


# --------------------------------------------------------------------------------------
# Routing statistics: re-run the step eagerly, recording each MoE layer's routed experts
# --------------------------------------------------------------------------------------

def touched_per_layer(cfg, W, N, L, B, ids, masked, kc, vc, n_layers, cos, sin, opts):
    """Runs an eager copy of the step and counts distinct routed experts per MoE layer."""
    counts = []
    step = build_step(cfg, W, N, L, B, opts, n_layers, cos, sin, compile_mode=None, stats=counts)
    step(ids, masked, kc, vc)
    if not counts:
        return None
    return float(torch.stack(counts).float().mean())


def profile_step(cfg, W, N, L, B, inp, kc, vc, n_layers, cos, sin, opts, compile_mode=None):
    from torch.profiler import profile, ProfilerActivity
    step = build_step(cfg, W, N, L, B, opts, n_layers, cos, sin, compile_mode=compile_mode)
    for _ in range(3):
        step(inp[0], inp[1], kc, vc)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step(inp[0], inp[1], kc, vc)
        torch.cuda.synchronize()
    print(f"[profile] batch {N}, {n_layers} layers, 3 steps, compile={compile_mode}")
    dt = lambda e: getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)  # noqa: E731
    evs = sorted(prof.key_averages(), key=lambda e: -dt(e))
    print(f"  total {sum(dt(e) for e in evs) / 3:9.1f} us/step (kernel time)")
    for ev in evs[:args_rows()]:
        print(f"  {dt(ev) / 3:9.1f} us/step  x{ev.count // 3:<4d} {ev.key[:110]}")


def args_rows():
    return 22


def weight_bytes(cfg, W, n_layers, touched, T):
    esz = 2
    H, D, NH, NKV = cfg.hidden, cfg.head_dim, cfg.heads, cfg.kv_heads
    total = T * H * esz                      # embedding rows
    total += cfg.vocab * H * esz + H * esz   # lm_head + final norm
    for i in range(n_layers):
        total += ((NH + 2 * NKV) * D * H + H * NH * D + 2 * H + 2 * D) * esz
        if i < cfg.first_dense:
            total += 3 * cfg.inter * H * esz
        else:
            total += cfg.experts * H * esz + cfg.experts * 4            # router (bf16) + bias
            total += (touched or 0) * 3 * cfg.moe_inter * H * esz       # routed experts
            total += 3 * cfg.moe_inter * cfg.shared * H * esz          # shared expert
    return int(total)


# --------------------------------------------------------------------------------------
# Check mode
# --------------------------------------------------------------------------------------

def reference_decision(cfg, logits, ids, masked, threshold=0.95):
    """MODEL.md LowConfidence step with quota 1 (steps == block size), per request."""
    N, B = ids.shape
    new_ids, new_masked = ids.clone(), masked.clone()
    p = torch.softmax(logits.double(), -1).view(N, B, -1)
    for n in range(N):
        conf, x0 = p[n].max(-1)
        pos = [j for j in range(B) if bool(masked[n, j])]
        if not pos:
            continue
        above = [j for j in pos if float(conf[j]) > threshold]
        if len(above) >= 1:
            pick = above
        else:
            best = max(float(conf[j]) for j in pos)
            pick = [min(j for j in pos if float(conf[j]) == best)]
        for j in pick:
            if int(x0[j]) != cfg.mask_id:
                new_ids[n, j] = x0[j]
                new_masked[n, j] = False
    return new_ids, new_masked


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def run_check(args):
    dev = torch.device(args.device)
    if dev.type == "cpu":
        return check_one(args, dev, torch.float32)
    rc = 0
    for name in args.check_dtype.split(","):
        rc |= check_one(args, dev, getattr(torch, name))
    return rc


def check_one(args, dev, dtype):
    if dev.type == "cpu":
        cfg = PRESETS["tiny"]
        N, L, B, n_layers, tol = 2, 20, 8, cfg.layers, 1e-4
    else:
        cfg = PRESETS[args.preset]
        n_layers = args.layers or 2
        # fp32: TF32 matmuls (allowed for the router) bound the error; bf16: see the noise floor
        N, L, B, tol = 1, min(args.prefix, 256), args.block, (2e-2 if dtype == torch.bfloat16 else 2e-3)
        torch.backends.cuda.matmul.allow_tf32 = True
    gmm_ok = grouped_mm_works(dev, dtype)
    import fused_moe_triton as fmt
    triton_ok = fmt.available(dev)
    print(f"[check] device={dev} torch={torch.__version__} dtype={dtype} N={N} L={L} B={B} "
          f"layers={n_layers} torch._grouped_mm usable: {gmm_ok}, triton MoE: "
          + ("yes" + (" (TRITON_INTERPRET=1)" if fmt.INTERPRET else "") if triton_ok else
             "no (" + ("triton not importable" if not fmt.HAVE_TRITON else
                       "on CPU it needs TRITON_INTERPRET=1") + ")"))
    ok = True
    worst = 0.0
    for layout in (["kn", "nk"] if dev.type == "cpu" else [args.layout]):
        for sig in ([True, False] if dev.type == "cpu" else [not args.shared_separate]):
            W = make_weights(cfg, n_layers, dev, dtype, args.seed, layout=layout, shared_in_grouped=sig)
            kc, vc = make_cache(cfg, n_layers, N, L, B, dev, dtype, args.seed)
            ids, masked = make_inputs(cfg, N, B, dev, args.seed, args.mask_frac)
            t0 = time.time()
            ref = reference_step(cfg, W, ids.cpu() if dev.type == "cpu" else ids, kc, vc, L, B, n_layers)
            print(f"[check] reference (float64 loops) took {time.time() - t0:.1f}s")
            cos, sin = rope_tables(cfg, L, B, N, dev)
            combos = []
            if triton_ok and dtype in (torch.bfloat16, torch.float32 if dev.type == "cpu" else None):
                # the Triton MoE (CPU: in Triton's interpreter, eager; GPU: compiled, in a graph)
                tcfgs = ([(16, (32, 32, 4, 4, 2), (32, 32, 4, 4, 2), "sum", "one"),
                          (16, (16, 32, 1, 4, 2), (32, 32, 2, 4, 2), "atomic", "multi")] if dev.type == "cpu"
                         else [fmt.DEFAULT, (64, (64, 128, 8, 4, 3), (128, 64, 8, 4, 3), "atomic", "multi")])
                for tc in tcfgs:
                    combos.append((Opts(attn=args.attn, fused_head=dev.type == "cuda", moe="triton",
                                        moe_cfg=tuple(fmt.flatten(tc)), combine=args.combine),
                                   "default" if dev.type == "cuda" else None))
            if dev.type == "cpu":
                for attn in ["pack", "gqa", "expand"]:
                    for gm in (["grouped_mm", "loop"] if gmm_ok else ["loop"]):
                        for fused in [False, True]:
                            combos.append((Opts(attn=attn, gmm=gm, fused_head=fused,
                                                top2="topk" if fused else "max",
                                                combine="scatter" if fused else "gather"), None))
            else:
                for attn in ["pack", "gqa", "expand"]:
                    combos.append((Opts(attn=attn, fused_head=False, combine=args.combine), None))
                combos.append((Opts(attn=args.attn, fused_head=False, top2="topk",
                                    combine="scatter" if args.combine == "gather" else "gather"), None))
                for cm in args.check_compile.split(","):
                    if cm and dtype == torch.bfloat16:
                        combos.append((Opts(attn=args.attn, fused_head=True, combine=args.combine), cm))
            for opts, cm in combos:
                attn, gm, fused = opts.attn, opts.gmm, opts.fused_head
                try:
                    if True:
                        step = build_step(cfg, W, N, L, B, opts, n_layers, cos, sin, compile_mode=cm)
                        kc2, vc2 = kc.clone(), vc.clone()
                        if dev.type == "cuda" and dtype == torch.bfloat16:
                            try:
                                g, out = capture(step, ids, masked, kc2, vc2, warmup=2)
                                g.replay()
                                torch.cuda.synchronize()
                                how = "cuda-graph" + (f", compile:{cm}" if cm else ", eager ops")
                            except Exception:  # noqa: BLE001
                                traceback.print_exc()
                                out = step(ids, masked, kc2, vc2)
                                how = "NO GRAPH (capture failed)" + (f", compile:{cm}" if cm else "")
                                ok = False
                        else:
                            out = step(ids, masked, kc2, vc2)
                            how = "eager" + (" (fp32 _grouped_mm is a host-synced fallback: no graph)"
                                             if dev.type == "cuda" else "")
                        logits = out[0]
                        e = rel_err(logits, ref)
                        row = ((logits.double() - ref.double()).norm(dim=-1) / ref.double().norm(dim=-1)).max()
                        agree = float((logits.double().argmax(-1) == ref.argmax(-1)).double().mean())
                        worst = max(worst, e)
                        good = e < tol
                        ok &= good
                        print(f"[check] layout={layout} shared_in_grouped={sig} attn={attn} "
                              + (f"moe=triton {fmt.describe(fmt.unflatten(opts.moe_cfg))} " if opts.moe == "triton" else f"gmm={gm} ")
                              + f"fused_head={fused} top2={opts.top2} combine={opts.combine} ({how}): rel err {e:.3e} (worst row {float(row):.3e}), "
                              f"argmax agreement {agree:.3f} -> {'OK' if good else 'FAIL'} (tol {tol})")
                        # the unmask decision against the same rule applied to the reference logits
                        _, new_ids, new_masked, conf = out
                        r_ids, r_masked = reference_decision(cfg, ref.to(ids.device), ids, masked)
                        dec = float((new_ids == r_ids).double().mean())
                        if not bool(((new_ids != ids) <= masked).all()) or not bool((new_masked == (masked & (new_ids == ids))).all()):
                            print("[check] FAIL: the decision touched an unmasked position")
                            ok = False
                        if dev.type == "cpu" and (dec < 1.0 or not bool((new_masked == r_masked).all())):
                            print(f"[check] FAIL: unmask decision differs from the reference ({dec:.3f} agree)")
                            ok = False
                        elif dec < 1.0:
                            print(f"[check] note: unmask decision agreement {dec:.3f} (bf16)")
                except Exception:  # noqa: BLE001 (a combo that cannot run fails the check, the rest go on)
                    traceback.print_exc()
                    print(f"[check] FAIL: {opts} raised")
                    ok = False
            if dev.type == "cuda":
                del W, kc, vc
                torch.cuda.empty_cache()
    if dev.type == "cpu":
        ok &= check_prefill_cache(cfg, n_layers, N, L, B, dev, dtype, args.seed)
    print(f"[check] {dtype}: max rel err {worst:.3e}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def check_prefill_cache(cfg, n_layers, N, L, B, dev, dtype, seed):
    """prefill_cache writes every prefix position and no block position, and is block-causal: a
    block's K/V do not change when the blocks after it are prefilled too."""
    W = make_weights(cfg, n_layers, dev, dtype, seed)
    opts = Opts(attn="pack", gmm="loop", fused_head=False)
    kc, vc = make_cache(cfg, n_layers, N, L, B, dev, dtype, seed)
    k0, v0 = kc.clone(), vc.clone()
    prefill_cache(cfg, W, n_layers, N, L, B, kc, vc, dev, seed, opts)
    written = bool((kc[:, :, :L] != k0[:, :, :L]).flatten(3).any(-1).all()) and \
        bool((vc[:, :, :L] != v0[:, :, :L]).flatten(3).any(-1).all())
    block_kept = torch.equal(kc[:, :, L:], k0[:, :, L:]) and torch.equal(vc[:, :, L:], v0[:, :, L:])
    kc1, vc1 = make_cache(cfg, n_layers, N, L, B, dev, dtype, seed)
    prefill_cache(cfg, W, n_layers, N, B, B, kc1, vc1, dev, seed, opts)
    causal = torch.equal(kc1[:, :, :B], kc[:, :, :B]) and torch.equal(vc1[:, :, :B], vc[:, :, :B])
    good = written and block_kept and causal
    print(f"[check] prefill_cache: prefix written {written}, block untouched {block_kept}, "
          f"block-causal {causal} -> {'OK' if good else 'FAIL'}")
    return good


# --------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------

def tune_triton(cfg, W, N, L, B, inp, kc, vc, n_layers, cos, sin, opts, args):
    """The triton variant's Opts, with the tile config tuned on this batch's real routing: an
    eager copy of the step records the first MoE layer's operands (h, routing), then
    fused_moe_triton.tune times the candidates on them."""
    import fused_moe_triton as fmt
    if not fmt.available("cuda"):
        raise RuntimeError("triton is not importable (or no CUDA): no triton variant")
    probe = []
    step = build_step(cfg, W, N, L, B, replace(opts, fused_head=False), n_layers, cos, sin, probe=probe)
    step(inp[0], inp[1], kc, vc)   # writes the block's K/V slots, as every timed step does
    if not probe:
        raise RuntimeError("no MoE layer to tune the triton variant on")
    h, ids, rw, w13, w2 = probe[0]
    slots = ids.numel() // h.shape[0]
    if args.triton_config:
        best = fmt.unflatten([int(v) for v in args.triton_config.split(",")])
        report = {"config": fmt.describe(best), "tuned": False}
    else:
        best, report = fmt.tune(h, ids, rw, w13, w2, slots, budget_s=args.tune_budget,
                                log=lambda m: print(m, flush=True))
    print(f"[baseline] batch {N}: triton config {fmt.describe(best)}"
          + (f" ({report['us_per_layer']} us/MoE layer, tuned in {report['tune_s']}s)" if "tune_s" in report else ""),
          flush=True)
    del probe, step
    return replace(opts, moe="triton", moe_cfg=tuple(fmt.flatten(best))), report


def bench(args):
    assert torch.cuda.is_available(), "benchmarking needs a CUDA GPU (use --check for the CPU check)"
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True   # fp32 router on bf16-valued operands: exact
    cfg = PRESETS[args.preset]
    n_full = cfg.layers
    n_layers = args.layers or n_full
    if args.preset == "flash" and not args.layers:
        sys.exit("flash (~100B params, ~200 GB bf16) does not fit one GPU: pass --layers N "
                 "(e.g. --layers 4); the step time is then extrapolated to all 32 layers "
                 "from the measured per-MoE-layer time")
    n_layers = min(n_layers, n_full)
    extrapolate = n_layers < n_full
    if extrapolate and n_layers < 2:
        sys.exit("--layers must be >= 2 (1 dense + >= 1 MoE) to extrapolate")
    L, B = args.prefix, args.block
    batches = [int(b) for b in args.batch.split(",")]
    gmm_ok = grouped_mm_works(dev, torch.bfloat16)
    if not gmm_ok:
        print("[baseline] WARNING: torch._grouped_mm unusable; falling back to a per-expert loop "
              "(host sync, no CUDA graph) - NOT a fair baseline", file=sys.stderr)
    t0 = time.time()
    W = make_weights(cfg, n_layers, dev, torch.bfloat16, args.seed, layout=args.layout,
                     shared_in_grouped=not args.shared_separate)
    torch.cuda.synchronize()
    wbytes = sum(t.numel() * t.element_size() for lw in W.layers for k, t in lw.items()
                 if torch.is_tensor(t) and k != "router_f32") + 2 * W.embed.numel() * 2
    print(f"[baseline] weights: {wbytes / 1e9:.1f} GB for {n_layers} layers, made in {time.time() - t0:.1f}s")
    # The untimed eager forwards' options: the balancing's and the prefix prefill's.
    eager = Opts(attn=args.attn, gmm="grouped_mm" if gmm_ok else "loop", fused_head=False)
    balance = None
    if args.balanced_router:
        t0 = time.time()
        balance = balance_router(cfg, W, n_layers, args.prefix, args.block, dev, args.seed, eager,
                                 rounds=args.balance_rounds, prompt_cache=args.prompt_cache)
        print(f"[baseline] routers balanced as training balances them ({time.time() - t0:.1f}s, "
              f"{balance['rows']} rows): a block routes to {balance['after']['experts_per_block']:.1f} "
              f"experts a layer ({balance['before']['experts_per_block']:.1f} as drawn), the busiest "
              f"expert takes {balance['after']['busiest_over_mean']:.2f}x the mean "
              f"({balance['before']['busiest_over_mean']:.2f}x as drawn)")
    variants = args.variants.split(",")
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "preset": args.preset, "layers_run": n_layers, "layers_model": n_full,
              "block": B, "layout": args.layout, "attn": args.attn, "mask_frac": args.mask_frac,
              "prompt_cache": args.prompt_cache,
              "variants": variants, "shared_in_grouped": not args.shared_separate, "runs": []}
    if balance is not None:
        result["router_balance"] = balance
    try:
        import triton
        result["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        pass
    for N in batches:
        kc, vc = make_cache(cfg, n_layers, N, L, B, dev, torch.bfloat16, args.seed)
        if args.prompt_cache:
            t0 = time.time()
            prefill_cache(cfg, W, n_layers, N, L, B, kc, vc, dev, args.seed, eager)
            torch.cuda.synchronize()
            print(f"[baseline] batch {N}: the {L}-token prefix prefilled from random prompts ({time.time() - t0:.1f}s)")
        cos, sin = rope_tables(cfg, L, B, N, dev)
        sets = [make_inputs(cfg, N, B, dev, args.seed + 100 + i, args.mask_frac) for i in range(args.input_sets)]
        per_variant = {}
        errors = {}
        if args.profile:
            profile_step(cfg, W, N, L, B, sets[0], kc, vc, n_layers, cos, sin,
                         Opts(attn=args.attn, gmm="grouped_mm" if gmm_ok else "loop", fused_head=True,
                              combine=args.combine, top2=args.top2),
                         compile_mode="default")
        for var in variants:
            try:
                compile_mode = None
                if var.startswith("compile") or var.startswith("triton"):
                    compile_mode = var.split(":", 1)[1] if ":" in var else "default"
                opts = Opts(attn=args.attn, gmm="grouped_mm" if gmm_ok else "loop",
                            combine=args.combine, top2=args.top2,
                            fused_head=compile_mode is not None)
                t1 = time.time()
                tuned = None
                if var.startswith("triton"):
                    opts, tuned = tune_triton(cfg, W, N, L, B, sets[0], kc, vc, n_layers, cos, sin, opts, args)
                layer_counts = [n_layers] + ([1] if extrapolate else [])
                times = {}
                for nl in layer_counts:
                    step = build_step(cfg, W, N, L, B, opts, nl, cos, sin, compile_mode=compile_mode)
                    if not gmm_ok:
                        for _ in range(2):
                            step(*sets[0], kc, vc)
                        torch.cuda.synchronize()
                        ts = []
                        for i in range(args.iters):
                            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                            a.record()
                            step(*sets[i % len(sets)], kc, vc)
                            b.record()
                            ts.append((a, b))
                        torch.cuda.synchronize()
                        times[nl] = statistics.median([a.elapsed_time(b) for a, b in ts])
                        continue
                    graphs, pool = [], None
                    for ids, masked in sets:
                        g, _ = capture(step, ids, masked, kc, vc, args.warmup if pool is None else 2, pool=pool)
                        pool = g.pool()
                        graphs.append(g)
                    times[nl], _ = time_graphs(graphs, args.iters, args.warmup)
                    del graphs
                ms = times[n_layers]
                info = {"measured_ms": ms, "setup_s": round(time.time() - t1, 1)}
                if tuned is not None:
                    info["triton"] = tuned
                if extrapolate:
                    per_layer = (times[n_layers] - times[1]) / (n_layers - 1)
                    info.update(per_moe_layer_ms=per_layer, dense_and_head_ms=times[1])
                    ms = times[1] + (n_full - 1) * per_layer
                info["step_ms"] = ms
                per_variant[var] = info
                print(f"[baseline] batch {N}: {var}: {ms:.3f} ms"
                      + (f" (extrapolated from {n_layers} layers: {info['measured_ms']:.3f} ms)" if extrapolate else "")
                      + f" [setup {info['setup_s']}s]")
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                errors[var] = f"{type(e).__name__}: {e}"[:500]
                print(f"[baseline] batch {N}: variant {var} FAILED, trying the next one", file=sys.stderr)
                torch.cuda.synchronize()
            finally:
                torch._dynamo.reset() if hasattr(torch, "_dynamo") else None
        if not per_variant:
            print(f"[baseline] batch {N}: every variant failed", file=sys.stderr)
            result["runs"].append({"batch": N, "prefix": L, "step_ms": None, "errors": errors})
            continue
        best = min(per_variant, key=lambda v: per_variant[v]["step_ms"])
        # experts touched: every variant runs the same routing code (torch ops, fp32 router);
        # counted on an eager copy of the step over the timed input sets
        touched = []
        for ids, masked in sets:
            t = touched_per_layer(cfg, W, N, L, B, ids, masked, kc, vc, n_layers, cos, sin,
                                  Opts(attn=args.attn, gmm="grouped_mm" if gmm_ok else "loop",
                                       combine=args.combine, top2=args.top2))
            if t is not None:
                touched.append(t)
        touched = statistics.mean(touched) if touched else None
        run = {"batch": N, "prefix": L, "block": B, "mask_frac": args.mask_frac,
               "step_ms": round(per_variant[best]["step_ms"], 4), "best": best,
               "variant": ("cudagraph+" if gmm_ok else "eager-loop-") + best
               + f" (attn={args.attn}, layout={args.layout}, shared_in_grouped={not args.shared_separate}, "
               f"combine={args.combine}, top2={args.top2})",
               "experts_touched_per_layer": touched,
               "weight_bytes_read": weight_bytes(cfg, W, n_full, touched, N * B),
               "kv_bytes_read": n_full * N * (L + B) * cfg.kv_heads * cfg.head_dim * 2 * 2,
               "variants_ms": {v: round(i["step_ms"], 4) for v, i in per_variant.items()},
               "extrapolated": extrapolate}
        for v, i in per_variant.items():
            if "triton" in i:   # the tuned tile config (and all candidate timings) per batch
                run.setdefault("triton", {})[v] = i["triton"]
        if extrapolate:
            run["measured_layers"] = n_layers
            run["per_moe_layer_ms"] = round(per_variant[best]["per_moe_layer_ms"], 4)
        if errors:
            run["errors"] = errors
        run["achieved_GBps"] = round((run["weight_bytes_read"] + run["kv_bytes_read"]) / run["step_ms"] / 1e6, 1)
        result["runs"].append(run)
        del kc, vc
        torch.cuda.empty_cache()
    print()
    print(f"{result['device']}  torch {result['torch']}  preset {args.preset}  prefix {L}  block {B}")
    print(f"{'batch':>6} {'step_ms':>9} {'experts/layer':>14} {'weight GB':>10} {'GB/s':>8}  variant / all variants")
    for r in result["runs"]:
        if r["step_ms"] is None:
            print(f"{r['batch']:>6} {'FAILED':>9}")
            continue
        print(f"{r['batch']:>6} {r['step_ms']:>9.3f} {r['experts_touched_per_layer'] or 0:>14.1f} "
              f"{r['weight_bytes_read'] / 1e9:>10.2f} {r['achieved_GBps']:>8.0f}  {r['variant']}  {r['variants_ms']}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
        print(f"wrote {args.json}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mini", choices=["mini", "flash"])
    p.add_argument("--batch", default="1,4,16,64")
    p.add_argument("--prefix", type=int, default=1024)
    p.add_argument("--block", type=int, default=32)
    p.add_argument("--balanced-router", action=argparse.BooleanOptionalAction, default=True,
                   help="balance every MoE layer's expert bias first, as training does (and as "
                        "`dllm bench` does by default): realistic routing, ~160 of 256 experts a "
                        "block at mini's batch 1 (--no-balanced-router: the random routers as "
                        "drawn, ~80)")
    p.add_argument("--balance-rounds", type=int, default=BALANCE_ROUNDS,
                   help="--balanced-router's calibration forwards that move the biases (fewer: less even "
                        "routing, a block reaching fewer experts)")
    p.add_argument("--prompt-cache", action=argparse.BooleanOptionalAction, default=True,
                   help="the prefix's K/V written by the model itself from random prompt ids, block by "
                        "block (block-causal, as the engine prefills), for the balancing's forwards and "
                        "the timed steps (default; --no-prompt-cache: random K/V). A block's tokens then "
                        "route as correlated as `dllm bench step`'s (mini at batch 1: ~159 experts a "
                        "layer against its ~153, within the 5%% that lets a speedup be quoted), where over "
                        "random K/V they route about independently (~162)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--json")
    p.add_argument("--layers", type=int, help="run only the first N layers (flash needs it); "
                   "the full-depth step time is extrapolated")
    p.add_argument("--variants", default="compile,triton,eager",
                   help="comma list tried in turn, fastest reported: compile[:MODE] | triton[:MODE] | eager "
                        "(MODE: default | max-autotune-no-cudagraphs; triton = compile with the MoE "
                        "through tools/fused_moe_triton.py, tile config tuned per batch)")
    p.add_argument("--tune-budget", type=float, default=90.0,
                   help="triton variant: seconds of tuning per batch at most (Triton compiles included)")
    p.add_argument("--triton-config",
                   help="triton variant: skip tuning, use this config (13 ints, fused_moe_triton.flatten: "
                        "BLOCK_M, gate_up BN,BK,GROUP_M,warps,stages, down BN,BK,GROUP_M,warps,stages, "
                        "atomic 0|1, align multi 0|1; e.g. the JSON's runs[].triton from an earlier run)")
    p.add_argument("--attn", default="pack", choices=["pack", "gqa", "expand"])
    p.add_argument("--layout", default="kn", choices=["kn", "nk"],
                   help="expert weights [E,H,2I] (kn, N contiguous) or [E,2I,H] (nk, HF, K contiguous)")
    p.add_argument("--shared-separate", action="store_true",
                   help="shared expert as its own dense GEMMs instead of group E of the grouped GEMM")
    p.add_argument("--input-sets", type=int, default=2, help="graphs (input sets) rotated while timing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mask-frac", type=float, default=0.5,
                   help="fraction of block positions still masked (identical tokens route alike, "
                        "so this changes experts touched); match it to the engine benchmark's inputs")
    p.add_argument("--check", action="store_true")
    p.add_argument("--check-dtype", default="float32,bfloat16",
                   help="--check --device cuda: dtypes checked (float32 held to 2e-3: TF32 matmuls; "
                        "bfloat16 held to 2e-2; default depth 2 layers, deeper bf16 runs drift by "
                        "routing flips, ~0.1 at 4 layers for any bf16 implementation of this random model)")
    p.add_argument("--combine", default="scatter", choices=["gather", "scatter"],
                   help="MoE combine: fp32 index_add of the expert rows (scatter, faster at batch 64 on "
                        "H100) or inverse-permutation gather + sum (gather)")
    p.add_argument("--top2", default="max", choices=["max", "topk"])
    p.add_argument("--profile", action="store_true", help="print a torch.profiler kernel table per batch (eager step)")
    p.add_argument("--check-compile", default="default",
                   help="--check --device cuda: compile modes also checked (comma list, '' for none)")
    p.add_argument("--device", default="cpu", help="--check only: cpu (tiny config, fp32) or cuda (preset shape, bf16)")
    args = p.parse_args()
    if args.balance_rounds < 1:
        p.error("--balance-rounds must be at least 1 (--no-balanced-router: the routers as drawn)")
    if args.check:
        return run_check(args)
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
