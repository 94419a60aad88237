"""A Triton fused-MoE for tools/baseline_torch.py (the `triton` variant).

The algorithm is the one the serving stacks run MoE models with (sorted token-expert
alignment, one grouped launch for gate+up, one for down, tile configs tuned per shape);
this is an independent implementation of it.

  align: the P = T*slots (token, expert) pairs ("slots", slot s = token*slots + k) are
      bucketed by expert: per-expert counts (tl.histogram), each expert's run padded to a
      multiple of BLOCK_M, exclusive cumsum = the run starts. Either one launch of one
      program ("one"), or a memset + count (histograms of 1024-slot chunks, atomically
      added) + runs (one program) + scatter ("multi"); the tuner times both.
      Outputs, all preallocated for the worst case EM = P + G*(BLOCK_M-1) rows:
        sorted_slots [EM] int32: the slot of each padded row, P (out of range) on padding
            (written up to n_padded only: nothing reads past it);
        ends_blk [G_P2] int32: where each expert's run ends, in M-blocks (a GEMM program finds
            its block's expert as the number of runs that end at or before it: one 2 KB load);
        n_padded [1] int32: the number of padded rows in use (blocks past it exit at once).
      Each slot gets its row by an atomic increment of its expert's cursor, so the order
      inside an expert's run is not fixed; it does not matter: every row is computed on its
      own and written back by slot, never by row.
      No host sync, static shapes: capturable in a CUDA graph.
  moe_gate_up (1 launch): program (M-block, N-block) gathers its rows of h (token =
      slot // slots), multiplies by the block's expert's gate and up columns (two fp32
      accumulators, bf16 tl.dot), and writes SiLU(gate)*up as bf16 to act[slot, n].
  moe_down (1 launch): act[slot] x down weights of the expert, times the slot's routing
      weight (fp32, in the epilogue); either written per slot (bf16 [P, H]; the caller sums
      the slots of a token in fp32, fused by torch.compile with the residual add) or
      atomically added into an fp32 [T, H] (combine "atomic").
Weights: w13 [G, H, 2I] (gate columns then up columns) and w2 [G, I, H], any strides
(the "kn" and "nk" layouts of baseline_torch.py both work as they are).

Tile configs: tune() times candidates per batch on the real routing (CUDA graphs of
repeated launches, so launch overhead is not measured) and returns the fastest; see
CANDIDATES_*.

  python3 tools/fused_moe_triton.py            # self-test (GPU, or CPU under TRITON_INTERPRET=1)
  python3 tools/fused_moe_triton.py --bench    # GPU: per-layer us, tuned Triton vs _grouped_mm
  python3 tools/fused_moe_triton.py --aot-check  # no GPU needed: compile everything for sm_90

Under TRITON_INTERPRET=1 (CPU) the kernels run in Triton's interpreter; its tl.dot on bf16
operands is wrong (numpy has no bf16), so there the tiles are widened to fp32 before the
dot (UPCAST): the products of bf16 values are exact in fp32, so this is the same math.
"""

import os
import sys
import time

import torch

try:
    import triton
    import triton.language as tl
    HAVE_TRITON = True
except Exception:  # noqa: BLE001
    HAVE_TRITON = False

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def available(device):
    """True where the Triton MoE can run on this device (GPU, or CPU under the interpreter)."""
    if not HAVE_TRITON:
        return False
    if INTERPRET:
        return True
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


if HAVE_TRITON:

    @triton.jit
    def _align_runs(counts, offs_g, G: tl.constexpr, BLOCK_M: tl.constexpr):
        """Per-expert counts -> padded run starts, run ends in M-blocks (bins >= G: the total)."""
        counts = tl.where(offs_g < G, counts, 0)
        padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
        ends = tl.cumsum(padded, 0)
        return ends - padded, ends // BLOCK_M, tl.sum(padded, 0)

    @triton.jit
    def _moe_align_one_kernel(ids_ptr, sorted_ptr, ends_blk_ptr, npad_ptr, cursor_ptr, P,
                              G: tl.constexpr, G_P2: tl.constexpr, BLOCK_M: tl.constexpr,
                              CHUNK: tl.constexpr):
        """The whole alignment in one program (small P)."""
        offs_g = tl.arange(0, G_P2)
        counts = tl.zeros([G_P2], dtype=tl.int32)
        for start in range(0, P, CHUNK):
            offs = start + tl.arange(0, CHUNK)
            e = tl.load(ids_ptr + offs, mask=offs < P, other=G_P2 - 1)
            counts += tl.histogram(e, G_P2)                # masked lanes land in bin G_P2-1 >= G
        starts, ends_blk, total = _align_runs(counts, offs_g, G, BLOCK_M)
        tl.store(npad_ptr, total)
        tl.store(ends_blk_ptr + offs_g, ends_blk)
        tl.store(cursor_ptr + offs_g, starts)
        for p0 in range(0, total, CHUNK):                  # padding rows: the sentinel P
            pp = p0 + tl.arange(0, CHUNK)
            tl.store(sorted_ptr + pp, tl.zeros([CHUNK], dtype=tl.int32) + P, mask=pp < total)
        tl.debug_barrier()                                 # cursors and sentinels first
        for start in range(0, P, CHUNK):
            offs = start + tl.arange(0, CHUNK)
            m = offs < P
            e = tl.load(ids_ptr + offs, mask=m, other=0)
            dest = tl.atomic_add(cursor_ptr + e, 1, mask=m)
            tl.store(sorted_ptr + dest, offs, mask=m)

    @triton.jit
    def _moe_count_kernel(ids_ptr, counts_ptr, P, G: tl.constexpr, G_P2: tl.constexpr,
                          CHUNK: tl.constexpr):
        """Multi-program alignment, 1/3: per-chunk histograms added into counts (zeroed)."""
        offs = tl.program_id(0) * CHUNK + tl.arange(0, CHUNK)
        e = tl.load(ids_ptr + offs, mask=offs < P, other=G_P2 - 1)
        offs_g = tl.arange(0, G_P2)
        tl.atomic_add(counts_ptr + offs_g, tl.histogram(e, G_P2), mask=offs_g < G, sem="relaxed")

    @triton.jit
    def _moe_runs_kernel(counts_ptr, sorted_ptr, ends_blk_ptr, npad_ptr, cursor_ptr, P,
                         G: tl.constexpr, G_P2: tl.constexpr, BLOCK_M: tl.constexpr,
                         CHUNK: tl.constexpr):
        """2/3 (one program): run starts (as cursors), run ends, total, sentinels."""
        offs_g = tl.arange(0, G_P2)
        counts = tl.load(counts_ptr + offs_g)
        starts, ends_blk, total = _align_runs(counts, offs_g, G, BLOCK_M)
        tl.store(npad_ptr, total)
        tl.store(ends_blk_ptr + offs_g, ends_blk)
        tl.store(cursor_ptr + offs_g, starts)
        for p0 in range(0, total, CHUNK):
            pp = p0 + tl.arange(0, CHUNK)
            tl.store(sorted_ptr + pp, tl.zeros([CHUNK], dtype=tl.int32) + P, mask=pp < total)

    @triton.jit
    def _moe_scatter_kernel(ids_ptr, sorted_ptr, cursor_ptr, P, CHUNK: tl.constexpr):
        """3/3: each slot takes the next row of its expert's run."""
        offs = tl.program_id(0) * CHUNK + tl.arange(0, CHUNK)
        m = offs < P
        e = tl.load(ids_ptr + offs, mask=m, other=0)
        dest = tl.atomic_add(cursor_ptr + e, 1, mask=m)
        tl.store(sorted_ptr + dest, offs, mask=m)

    @triton.jit
    def _block_expert(ends_blk_ptr, pid_m, G_P2: tl.constexpr):
        """The expert whose run holds M-block pid_m: the number of runs that end at or before it."""
        ends = tl.load(ends_blk_ptr + tl.arange(0, G_P2))
        return tl.sum((ends <= pid_m).to(tl.int32), 0).to(tl.int64)

    @triton.jit
    def _round(x, dt: tl.constexpr, UPCAST: tl.constexpr):
        """x (fp32) -> dt. The interpreter's fp32 -> bf16 cast truncates (the GPU rounds to
        nearest even): under it, round the bits first so that the truncation is exact."""
        if UPCAST and dt == tl.bfloat16:
            b = x.to(tl.int32, bitcast=True)
            b = (b + 0x7FFF + ((b >> 16) & 1)) & -65536
            x = b.to(tl.float32, bitcast=True)
        return x.to(dt)

    @triton.jit
    def _pid_mn(EM, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
        pid = tl.program_id(0)
        num_pid_m = tl.cdiv(EM, BLOCK_M)
        num_pid_n = tl.cdiv(N, BLOCK_N)
        per_group = GROUP_M * num_pid_n
        first_m = (pid // per_group) * GROUP_M
        gsize = tl.minimum(num_pid_m - first_m, GROUP_M)
        pid_m = first_m + ((pid % per_group) % gsize)
        pid_n = (pid % per_group) // gsize
        return pid_m, pid_n

    @triton.jit
    def _moe_gate_up_kernel(h_ptr, w_ptr, act_ptr, sorted_ptr, ends_blk_ptr, npad_ptr,
                            P, EM, K, I,
                            stride_hm, stride_we, stride_wk, stride_wn, stride_am,
                            SLOTS: tl.constexpr, G_P2: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, W_KN: tl.constexpr,
                            UPCAST: tl.constexpr):
        pid_m, pid_n = _pid_mn(EM, I, BLOCK_M, BLOCK_N, GROUP_M)
        if pid_m * BLOCK_M >= tl.load(npad_ptr):
            return
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        slot = tl.load(sorted_ptr + offs_m)
        valid = slot < P
        tok = (slot // SLOTS).to(tl.int64)
        e = _block_expert(ends_blk_ptr, pid_m, G_P2)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        a_ptrs = h_ptr + tok[:, None] * stride_hm + offs_k[None, :]
        # one of the two weight strides is 1 (W_KN: N contiguous): said as a constexpr so that
        # the compiler sees contiguous rows (vector loads, async-copy pipelining)
        if W_KN:
            g_ptrs = w_ptr + e * stride_we + offs_k[:, None] * stride_wk + offs_n[None, :]
            u_ptrs = g_ptrs + I
            step_k = BLOCK_K * stride_wk
        else:
            g_ptrs = w_ptr + e * stride_we + offs_k[:, None] + offs_n[None, :] * stride_wn
            u_ptrs = g_ptrs + I * stride_wn
            step_k = BLOCK_K
        acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for _k in range(0, K, BLOCK_K):
            a = tl.load(a_ptrs, mask=valid[:, None], other=0.0)
            g = tl.load(g_ptrs)
            u = tl.load(u_ptrs)
            if UPCAST:
                a = a.to(tl.float32)
                g = g.to(tl.float32)
                u = u.to(tl.float32)
            acc_g = tl.dot(a, g, acc_g)
            acc_u = tl.dot(a, u, acc_u)
            a_ptrs += BLOCK_K
            g_ptrs += step_k
            u_ptrs += step_k
        act = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u
        o_ptrs = act_ptr + slot.to(tl.int64)[:, None] * stride_am + offs_n[None, :]
        tl.store(o_ptrs, _round(act, act_ptr.dtype.element_ty, UPCAST), mask=valid[:, None])

    @triton.jit
    def _moe_down_kernel(act_ptr, w_ptr, rw_ptr, out_ptr, sorted_ptr, ends_blk_ptr, npad_ptr,
                         P, EM, K, N,
                         stride_am, stride_we, stride_wk, stride_wn, stride_om,
                         SLOTS: tl.constexpr, G_P2: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, ATOMIC: tl.constexpr,
                         W_KN: tl.constexpr, UPCAST: tl.constexpr):
        pid_m, pid_n = _pid_mn(EM, N, BLOCK_M, BLOCK_N, GROUP_M)
        if pid_m * BLOCK_M >= tl.load(npad_ptr):
            return
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        slot = tl.load(sorted_ptr + offs_m)
        valid = slot < P
        slot64 = slot.to(tl.int64)
        e = _block_expert(ends_blk_ptr, pid_m, G_P2)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        a_ptrs = act_ptr + slot64[:, None] * stride_am + offs_k[None, :]
        if W_KN:
            b_ptrs = w_ptr + e * stride_we + offs_k[:, None] * stride_wk + offs_n[None, :]
            step_k = BLOCK_K * stride_wk
        else:
            b_ptrs = w_ptr + e * stride_we + offs_k[:, None] + offs_n[None, :] * stride_wn
            step_k = BLOCK_K
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for _k in range(0, K, BLOCK_K):
            a = tl.load(a_ptrs, mask=valid[:, None], other=0.0)
            b = tl.load(b_ptrs)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc)
            a_ptrs += BLOCK_K
            b_ptrs += step_k
        rw = tl.load(rw_ptr + slot, mask=valid, other=0.0)
        acc = acc * rw[:, None]
        if ATOMIC:
            tok = slot64 // SLOTS
            o_ptrs = out_ptr + tok[:, None] * stride_om + offs_n[None, :]
            tl.atomic_add(o_ptrs, acc, mask=valid[:, None], sem="relaxed")
        else:
            o_ptrs = out_ptr + slot64[:, None] * stride_om + offs_n[None, :]
            tl.store(o_ptrs, _round(acc, out_ptr.dtype.element_ty, UPCAST), mask=valid[:, None])


# --------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------

# A config: (BLOCK_M, gate_up (BN, BK, GROUP_M, warps, stages), down (BN, BK, GROUP_M, warps,
# stages), combine "sum" | "atomic"[, align "one" | "multi"]). Flattened to 13 ints for the op.
DEFAULT = (16, (64, 64, 8, 4, 3), (64, 64, 8, 4, 3), "sum", "one")

# Candidates tried by tune(), per kernel, for each BLOCK_M. Small M: the weights dominate
# the traffic, so the point is enough programs in flight and deep enough pipelines.
BLOCK_MS = (16, 32, 64)
CANDIDATES_GATE_UP = [  # BN, BK, GROUP_M, warps, stages (two accumulators: BN 128 is 2x64 regs)
    (32, 128, 8, 4, 4), (64, 64, 8, 4, 3), (64, 64, 8, 4, 4), (64, 128, 8, 4, 3),
    (64, 128, 8, 4, 4), (64, 128, 8, 8, 3), (128, 64, 8, 4, 3), (128, 64, 8, 8, 4),
    (32, 256, 8, 4, 3), (64, 128, 8, 4, 5),
]
CANDIDATES_DOWN = [     # each tried with both combines
    (64, 64, 8, 4, 4), (64, 128, 8, 4, 3), (64, 128, 8, 4, 4),
    (128, 64, 8, 4, 3), (128, 64, 8, 4, 4), (128, 128, 8, 8, 3), (64, 128, 8, 4, 5),
]
# All of these compile for sm_90 (Triton 3.9, checked ahead of time without a GPU: --aot-check):
# async-copy pipelined loads, wgmma at BLOCK_M 64; gate_up (64, 128, .., 5 stages) at BLOCK_M 64
# needs 240 KB of shared memory, more than an H100/H200 SM has: it fails at launch and the
# tuner skips it, as it would any candidate that cannot run.


def _full(cfg):
    return tuple(cfg) if len(cfg) == 5 else (*cfg, "one")


def flatten(cfg):
    bm, gu, dn, comb, al = _full(cfg)
    return [bm, *gu, *dn, 1 if comb == "atomic" else 0, 1 if al == "multi" else 0]


def unflatten(f):
    f = [int(v) for v in f] + [0] * (13 - len(f))
    return (f[0], tuple(f[1:6]), tuple(f[6:11]), "atomic" if f[11] else "sum", "multi" if f[12] else "one")


def describe(cfg):
    bm, gu, dn, comb, al = _full(cfg)
    k = ("BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages")
    return {"BLOCK_M": bm, "gate_up": dict(zip(k, gu)), "down": dict(zip(k, dn)), "combine": comb,
            "align": al}


def _next_pow2(n):
    return 1 << (max(1, int(n)) - 1).bit_length()


def _fits(kdim, ndim, bn, bk):
    return ndim % bn == 0 and kdim % bk == 0 and bn >= 16 and bk >= 16


def _w_kn(w):
    """[G, K, N] weights: True if N is contiguous, False if K is (anything else: copy first)."""
    if w.stride(2) == 1:
        return True
    assert w.stride(1) == 1, f"weights need a unit stride in K or N, got {w.stride()}"
    return False


class Aligned:
    __slots__ = ("sorted", "ends_blk", "npad", "EM", "NB", "BM", "G_P2")


def align(ids, n_groups, block_m, mode="one"):
    """ids: [P] int32 expert per slot (values < n_groups). mode "one": one program does it
    all (best for small P); "multi": count / runs / scatter over cdiv(P, 1024) programs
    (+ a memset). Returns Aligned (device tensors, static shapes for the worst case)."""
    P = ids.numel()
    EM = P + n_groups * (block_m - 1)
    dev = ids.device
    a = Aligned()
    a.G_P2 = g_p2 = _next_pow2(n_groups + 1)
    a.sorted = torch.empty(EM, device=dev, dtype=torch.int32)
    a.ends_blk = torch.empty(g_p2, device=dev, dtype=torch.int32)
    a.npad = torch.empty(1, device=dev, dtype=torch.int32)
    cursor = torch.empty(g_p2, device=dev, dtype=torch.int32)
    if mode == "one":
        nw = 4 if INTERPRET else 16
        chunk = min(2048, max(32 * nw, _next_pow2(P)))   # >= one element a thread: no lane twice
        _moe_align_one_kernel[(1,)](ids, a.sorted, a.ends_blk, a.npad, cursor, P,
                                    G=n_groups, G_P2=g_p2, BLOCK_M=block_m, CHUNK=chunk,
                                    num_warps=nw)
    else:
        chunk = 1024
        counts = torch.zeros(g_p2, device=dev, dtype=torch.int32)
        nprog = triton.cdiv(P, chunk)
        _moe_count_kernel[(nprog,)](ids, counts, P, G=n_groups, G_P2=g_p2, CHUNK=chunk, num_warps=4)
        _moe_runs_kernel[(1,)](counts, a.sorted, a.ends_blk, a.npad, cursor, P,
                               G=n_groups, G_P2=g_p2, BLOCK_M=block_m, CHUNK=chunk, num_warps=4)
        _moe_scatter_kernel[(nprog,)](ids, a.sorted, cursor, P, CHUNK=chunk, num_warps=4)
    a.EM, a.NB, a.BM = EM, triton.cdiv(EM, block_m), block_m
    return a


def gate_up(h, w13, al, P, slots, cfg_gu, act=None):
    """act [P, I] = SiLU(h[tok] @ gate[e]) * (h[tok] @ up[e]) for every slot."""
    bn, bk, gm, nw, ns = cfg_gu
    T, K = h.shape
    assert h.stride(1) == 1
    I = w13.shape[2] // 2
    assert _fits(K, I, bn, bk), (K, I, bn, bk)
    if act is None:
        act = torch.empty((P, I), device=h.device, dtype=h.dtype)
    grid = (al.NB * (I // bn),)
    _moe_gate_up_kernel[grid](h, w13, act, al.sorted, al.ends_blk, al.npad,
                              P, al.EM, K, I,
                              h.stride(0), w13.stride(0), w13.stride(1), w13.stride(2), act.stride(0),
                              SLOTS=slots, G_P2=al.G_P2, BLOCK_M=al.BM, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm,
                              W_KN=_w_kn(w13), UPCAST=INTERPRET, num_warps=nw, num_stages=ns)
    return act


def down(act, w2, rw, al, T, slots, cfg_dn, combine):
    """combine "sum": y [P, H] (bf16, times the routing weight); "atomic": out [T, H] fp32,
    the sum over the token's slots."""
    bn, bk, gm, nw, ns = cfg_dn
    P, K = act.shape
    N = w2.shape[2]
    assert _fits(K, N, bn, bk), (K, N, bn, bk)
    if combine == "atomic":
        out = torch.zeros((T, N), device=act.device, dtype=torch.float32)
    else:
        out = torch.empty((P, N), device=act.device, dtype=act.dtype)
    grid = (al.NB * (N // bn),)
    _moe_down_kernel[grid](act, w2, rw, out, al.sorted, al.ends_blk, al.npad,
                           P, al.EM, K, N,
                           act.stride(0), w2.stride(0), w2.stride(1), w2.stride(2), out.stride(0),
                           SLOTS=slots, G_P2=al.G_P2, BLOCK_M=al.BM, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm,
                           ATOMIC=combine == "atomic", W_KN=_w_kn(w2), UPCAST=INTERPRET,
                           num_warps=nw, num_stages=ns)
    return out


def fused_moe_raw(h, ids, rw, w13, w2, slots, cfg):
    """h [T, H]; ids [T*slots] int32 (expert per slot, slot = token*slots + k); rw [T*slots]
    fp32 routing weights; w13 [G, H, 2I], w2 [G, I, H] (any strides). Returns [P, H] per-slot
    rows (combine "sum") or [T, H] fp32 sums (combine "atomic")."""
    bm, gu, dn, comb, amode = _full(cfg)
    T = h.shape[0]
    P = ids.numel()
    al = align(ids, w13.shape[0], bm, amode)
    act = gate_up(h, w13, al, P, slots, gu)
    return down(act, w2, rw, al, T, slots, dn, comb)


def combine_slots(y, T, slots):
    """[P, H] per-slot rows -> [T, H] fp32 sums."""
    return y.view(T, slots, -1).float().sum(1)


def fused_moe(h, ids, rw, w13, w2, slots, cfg):
    """[T, H] fp32: the routed (and, as a group, shared) experts' sum per token."""
    y = fused_moe_raw(h, ids, rw, w13, w2, slots, cfg)
    return y if cfg[3] == "atomic" else combine_slots(y, h.shape[0], slots)


# torch.compile sees the kernels as one opaque op (static shapes; the fake impl gives the
# output shape). Inside a CUDA-graph capture the op's Python runs once and its launches are
# recorded.
_OP = None


def op():
    global _OP
    if _OP is None:
        @torch.library.custom_op("dllm_baseline::fused_moe", mutates_args=())
        def _fused_moe_op(h: torch.Tensor, ids: torch.Tensor, rw: torch.Tensor, w13: torch.Tensor,
                          w2: torch.Tensor, slots: int, cfg: list[int]) -> torch.Tensor:
            return fused_moe_raw(h, ids, rw, w13, w2, slots, unflatten(cfg))

        @_fused_moe_op.register_fake
        def _(h, ids, rw, w13, w2, slots, cfg):
            if cfg[11]:   # combine "atomic"
                return h.new_empty((h.shape[0], w2.shape[2]), dtype=torch.float32)
            return h.new_empty((ids.numel(), w2.shape[2]))

        _OP = _fused_moe_op
    return _OP


def reference_moe(h, ids, rw, w13, w2, slots, round_slots=False):
    """Plain per-expert loop in fp32 (same math: fp32 gate/up, SiLU*up rounded to h's dtype,
    down, times the weight, [rounded to h's dtype per slot: combine "sum"], fp32 sum over
    slots)."""
    T = h.shape[0]
    out = torch.zeros((T, w2.shape[2]), dtype=torch.float32, device=h.device)
    I = w13.shape[2] // 2
    tok = torch.arange(ids.numel(), device=h.device) // slots
    for e in ids.unique().tolist():
        sel = (ids == e).nonzero().squeeze(1)
        x = h[tok[sel]].float()
        gu = x @ w13[e].float()
        act = (torch.nn.functional.silu(gu[:, :I]) * gu[:, I:]).to(h.dtype).float()
        y = (act @ w2[e].float()) * rw[sel, None]
        if round_slots:
            y = y.to(h.dtype).float()
        out.index_add_(0, tok[sel], y)
    return out


# --------------------------------------------------------------------------------------
# Tuning (GPU)
# --------------------------------------------------------------------------------------

def _time_graph(fn, reps=10, replays=5):
    """us per call of fn: a CUDA graph of `reps` calls, replayed; median of `replays`."""
    fn()
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1000.0 / reps)
    del g
    ts.sort()
    return ts[len(ts) // 2]


def tune(h, ids, rw, w13, w2, slots, block_ms=None, log=None, budget_s=90.0):
    """Times the candidates on these real operands; returns (best cfg, report dict).
    BLOCK_M: 16, 32, 64, those at most twice the mean rows per routed expert (16 always).
    Per BLOCK_M: the faster alignment, the best gate_up config, the best down config for each
    combine; the total (align + gate_up + down + the slot sum where "sum") decides. Bounded by
    budget_s (candidates past it are skipped, the best so far is kept); the first batch pays
    the Triton compiles (~1 s a config), later ones hit the cache."""
    t0 = time.time()
    T, H = h.shape
    P = ids.numel()
    G = w13.shape[0]
    I = w13.shape[2] // 2
    n_used = int(torch.unique(ids).numel())
    rows = P / max(1, n_used)
    if block_ms is None:
        # largest first: if the budget runs out, the likeliest winner has been timed
        block_ms = [bm for bm in BLOCK_MS if bm == BLOCK_MS[0] or bm <= 2 * rows][::-1]
    log = log or (lambda s: print(s, file=sys.stderr))
    ref = reference_moe(h, ids, rw, w13, w2, slots)
    scale = float(ref.norm())
    log(f"[tune] T={T}: {P} slots over {n_used} groups ({rows:.1f} rows each): BLOCK_M {block_ms}")
    best, best_us, rows = None, float("inf"), []
    for bm in block_ms:
        if time.time() - t0 > budget_s:
            break
        t_align, amode = float("inf"), None
        for m in ("one", "multi"):
            try:
                us = _time_graph(lambda: align(ids, G, bm, m))
            except Exception as e:  # noqa: BLE001
                log(f"[tune] BLOCK_M {bm}: align {m} failed: {type(e).__name__}: {str(e)[:160]}")
                continue
            rows.append({"BLOCK_M": bm, "kernel": "align", "cfg": m, "us": round(us, 2)})
            if us < t_align:
                t_align, amode = us, m
        if amode is None:
            continue
        al = align(ids, G, bm, amode)
        act = torch.empty((P, I), device=h.device, dtype=h.dtype)
        g_best = None
        for c in CANDIDATES_GATE_UP:
            if not _fits(H, I, c[0], c[1]) or time.time() - t0 > budget_s:
                continue
            try:
                us = _time_graph(lambda: gate_up(h, w13, al, P, slots, c, act=act))
            except Exception as e:  # noqa: BLE001 (e.g. out of shared memory)
                log(f"[tune] BLOCK_M {bm} gate_up {c}: {type(e).__name__}: {str(e)[:120]}")
                continue
            rows.append({"BLOCK_M": bm, "kernel": "gate_up", "cfg": list(c), "us": round(us, 2)})
            if g_best is None or us < g_best[1]:
                g_best = (c, us)
        if g_best is None:
            continue
        gate_up(h, w13, al, P, slots, g_best[0], act=act)
        d_best = None
        for comb in ("sum", "atomic"):
            for c in CANDIDATES_DOWN:
                if not _fits(I, H, c[0], c[1]) or time.time() - t0 > budget_s:
                    continue
                try:
                    if comb == "sum":
                        fn = lambda: combine_slots(down(act, w2, rw, al, T, slots, c, comb), T, slots)  # noqa: E731
                    else:
                        fn = lambda: down(act, w2, rw, al, T, slots, c, comb)  # noqa: E731
                    us = _time_graph(fn)
                except Exception as e:  # noqa: BLE001
                    log(f"[tune] BLOCK_M {bm} down {c} {comb}: {type(e).__name__}: {str(e)[:120]}")
                    continue
                rows.append({"BLOCK_M": bm, "kernel": "down+" + comb, "cfg": list(c), "us": round(us, 2)})
                if d_best is None or us < d_best[1]:
                    d_best = (c, us, comb)
        if d_best is None:
            continue
        cfg = (bm, g_best[0], d_best[0], d_best[2], amode)
        # correctness of the chosen pair on these operands (a config must never win wrong)
        out = fused_moe(h, ids, rw, w13, w2, slots, cfg)
        err = float((out - ref).norm()) / max(scale, 1e-30)
        total = t_align + g_best[1] + d_best[1]
        log(f"[tune] T={T} BLOCK_M {bm}: align {amode} {t_align:.1f} us + gate_up {g_best[0]} {g_best[1]:.1f} us "
            f"+ down {d_best[0]} {d_best[2]} {d_best[1]:.1f} us = {total:.1f} us/layer, rel err {err:.2e}")
        if err > 2e-2:
            log(f"[tune] BLOCK_M {bm}: rejected (rel err {err:.2e})")
            continue
        if total < best_us:
            best, best_us = cfg, total
    if best is None:
        raise RuntimeError("no Triton MoE config ran correctly")
    report = {"config": describe(best), "us_per_layer": round(best_us, 2), "groups_used": n_used,
              "tune_s": round(time.time() - t0, 1), "timings": rows}
    return best, report


# --------------------------------------------------------------------------------------
# Self-test: the kernels against reference_moe on several routings
# --------------------------------------------------------------------------------------

def selftest(device, dtype=torch.bfloat16, H=64, I=32, G=17, slots=5, T=24, configs=None, seed=0):
    """Routings: uniform random; all slots of every token to one expert (the 'all tokens'
    expert, the rest empty); a few experts only (most empty); the last slot always to the
    shared group G-1 (as baseline_torch.py routes). Returns the worst relative error."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    h = torch.randn(T, H, generator=g).to(device=device, dtype=dtype)
    w13 = (torch.randn(G, H, 2 * I, generator=g) / H ** 0.5).to(device=device, dtype=dtype)
    w2 = (torch.randn(G, I, H, generator=g) / I ** 0.5).to(device=device, dtype=dtype)
    w13_nk = w13.transpose(1, 2).contiguous().transpose(1, 2)     # K-contiguous storage, same values
    w2_nk = w2.transpose(1, 2).contiguous().transpose(1, 2)
    P = T * slots
    routings = {}
    routings["uniform"] = torch.randint(0, G, (P,), generator=g)
    routings["one expert takes all"] = torch.full((P,), 3)
    few = torch.tensor([0, 5, 5, 9])[torch.randint(0, 4, (P,), generator=g)]
    routings["four experts, rest empty"] = few
    r = torch.stack([torch.randperm(G - 1, generator=g)[:slots - 1] for _ in range(T)])
    routings["distinct top-k + shared"] = torch.cat([r, torch.full((T, 1), G - 1)], 1).reshape(-1)
    rw = torch.rand(P, generator=g).to(device)
    if configs is None:
        configs = [(16, (16, 32, 1, 4, 2), (16, 32, 1, 4, 2), "sum", "one"),
                   (32, (32, 16, 4, 4, 2), (32, 32, 4, 4, 2), "atomic", "multi"),
                   (16, (32, 64, 8, 4, 3), (64, 32, 2, 4, 3), "sum", "multi"),
                   (64, (16, 64, 2, 4, 3), (32, 32, 8, 4, 3), "atomic", "one")]
    worst = 0.0
    for name, ids in routings.items():
        ids = ids.to(device=device, dtype=torch.int32)
        refs = {c: reference_moe(h, ids, rw, w13, w2, slots, round_slots=c == "sum")
                for c in ("sum", "atomic")}
        for cfg in configs:
            ref = refs[cfg[3]]
            for lay, (a13, a2) in (("kn", (w13, w2)), ("nk", (w13_nk, w2_nk))):
                out = fused_moe(h, ids, rw, a13, a2, slots, cfg)
                err = float((out.double() - ref.double()).norm() / ref.double().norm())
                # the alignment itself: every slot exactly once, padding = sentinel, blocks of one expert
                al = align(ids, G, cfg[0], cfg[4])
                srt = al.sorted.cpu()
                npad = int(al.npad.cpu())
                used = srt[:npad]
                real = used[used < P]
                ok_align = sorted(real.tolist()) == list(range(P))   # every slot once, rest sentinel
                eb = al.ends_blk.cpu()
                be = [(eb[:G] <= b).sum() for b in range(npad // cfg[0])]
                if int(eb[G - 1]) * cfg[0] != npad:
                    ok_align = False
                for b in range(npad // cfg[0]):
                    blk = srt[b * cfg[0]:(b + 1) * cfg[0]]
                    blk = blk[blk < P]
                    if len(blk) and not bool((ids.cpu()[blk.long()] == be[b]).all()):
                        ok_align = False
                worst = max(worst, err)
                print(f"[selftest] {name:28s} BLOCK_M {cfg[0]:3d} {cfg[3]:6s} align {cfg[4]:5s} {lay}: rel err {err:.2e}, "
                      f"align {'ok' if ok_align else 'WRONG'} (padded rows {npad})")
                if not ok_align:
                    worst = float("inf")
    return worst


def grouped_mm_moe(h, ids, rw, w13, w2, slots):
    """The compile variant's MoE (torch ops + torch._grouped_mm), for --bench."""
    T = h.shape[0]
    G = w13.shape[0]
    I = w13.shape[2] // 2
    sorted_e, order = torch.sort(ids.to(torch.int16))
    offs = torch.searchsorted(sorted_e, torch.arange(G, device=h.device, dtype=torch.int16), right=True,
                              out_int32=True)
    tok = order // slots
    gu = torch._grouped_mm(h.index_select(0, tok), w13, offs=offs)
    a = (torch.nn.functional.silu(gu[:, :I].float()) * gu[:, I:].float() * rw.index_select(0, order)[:, None]).to(h.dtype)
    y = torch._grouped_mm(a, w2, offs=offs)
    return torch.zeros((T, w2.shape[2]), device=h.device, dtype=torch.float32).index_add_(0, tok, y.float())


def bench_main(batches=(1, 4, 16, 64), block=32, H=2048, I=512, E=256, top_k=8, seed=0):
    """Per-MoE-layer time at the mini shape (GPU): tuned Triton MoE vs torch._grouped_mm, on a
    uniform random top-8 of 256 + the shared group (every expert routed from batch 4 on)."""
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(seed)
    G = E + 1
    w13 = torch.randn((G, H, 2 * I), generator=g, device=dev, dtype=torch.bfloat16) / H ** 0.5
    w2 = torch.randn((G, I, H), generator=g, device=dev, dtype=torch.bfloat16) / I ** 0.5
    for n in batches:
        T = n * block
        h = torch.randn((T, H), generator=g, device=dev, dtype=torch.bfloat16)
        r = torch.rand((T, E), generator=g, device=dev).topk(top_k, dim=1).indices
        ids = torch.cat([r, torch.full((T, 1), E, device=dev)], 1).reshape(-1).to(torch.int32)
        rw = torch.rand((T * (top_k + 1),), generator=g, device=dev)
        cfg, rep = tune(h, ids, rw, w13, w2, top_k + 1, log=lambda m: print(m, flush=True))
        us_t = _time_graph(lambda: fused_moe(h, ids, rw, w13, w2, top_k + 1, cfg))
        us_g = _time_graph(lambda: grouped_mm_moe(h, ids, rw, w13, w2, top_k + 1))
        a = fused_moe(h, ids, rw, w13, w2, top_k + 1, cfg)
        b = grouped_mm_moe(h, ids, rw, w13, w2, top_k + 1)
        err = float((a - b).norm() / b.norm())
        nbytes = rep["groups_used"] * 3 * H * I * 2
        print(f"[bench] batch {n} (T={T}, {rep['groups_used']} groups): triton {us_t:.1f} us "
              f"({nbytes / us_t / 1e3:.0f} GB/s of expert weights), grouped_mm {us_g:.1f} us "
              f"({nbytes / us_g / 1e3:.0f} GB/s); rel diff {err:.1e}; config {describe(cfg)}", flush=True)


def aot_check(arch=90, H=2048, I=512, G=257, slots=9):
    """Compiles every kernel and tuning candidate for sm_<arch> without a GPU (Triton's own
    ptxas) with the JIT's usual specializations (16-divisible pointers and ints), and prints
    shared memory, whether loads are async-copy pipelined and whether wgmma is used. The
    ASTSource signature/attrs form is Triton 3.9's (other versions may differ)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    tgt = GPUTarget("cuda", arch, 32)

    def comp(fn, sig, consts, nw, ns):
        names = fn.arg_names
        signature = {n: ("constexpr" if n in consts else sig[n]) for n in names}
        cx = {(names.index(k),): v for k, v in consts.items()}
        attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in names if n not in consts and n != "EM"}
        k = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=cx, attrs=attrs), target=tgt,
                           options={"num_warps": nw, "num_stages": ns})
        ir = k.asm["ttgir"]
        if "dot" not in ir:
            return f"smem {k.metadata.shared:6d}, compiled"
        return (f"smem {k.metadata.shared:6d}, {'async-copy' if 'async_copy' in ir else 'SYNC LOADS'}, "
                f"{'wgmma' if 'warp_group_dot' in ir else 'mma'}")
    i32 = "*i32"
    g_p2 = _next_pow2(G + 1)
    al = {"ids_ptr": i32, "sorted_ptr": i32, "ends_blk_ptr": i32, "npad_ptr": i32, "cursor_ptr": i32, "P": "i32"}
    print("align one  ", comp(_moe_align_one_kernel, al, {"G": G, "G_P2": g_p2, "BLOCK_M": 16, "CHUNK": 2048}, 16, 3))
    print("align count", comp(_moe_count_kernel, {"ids_ptr": i32, "counts_ptr": i32, "P": "i32"},
                               {"G": G, "G_P2": g_p2, "CHUNK": 1024}, 4, 3))
    print("align runs ", comp(_moe_runs_kernel, {**al, "counts_ptr": i32},
                               {"G": G, "G_P2": g_p2, "BLOCK_M": 16, "CHUNK": 1024}, 4, 3))
    print("align scat ", comp(_moe_scatter_kernel, {"ids_ptr": i32, "sorted_ptr": i32, "cursor_ptr": i32, "P": "i32"},
                               {"CHUNK": 1024}, 4, 3))
    ints = {n: "i32" for n in ("P", "EM", "K", "I", "N", "stride_hm", "stride_we", "stride_wk", "stride_wn",
                               "stride_am", "stride_om")}
    gsig = {"h_ptr": "*bf16", "w_ptr": "*bf16", "act_ptr": "*bf16", "sorted_ptr": i32, "ends_blk_ptr": i32,
            "npad_ptr": i32, **ints}
    for bm in BLOCK_MS:
        for c in CANDIDATES_GATE_UP:
            bn, bk, gm, nw, ns = c
            print(f"gate_up BLOCK_M {bm:2d} {c}:",
                  comp(_moe_gate_up_kernel, gsig, {"SLOTS": slots, "G_P2": g_p2, "BLOCK_M": bm, "BLOCK_N": bn,
                       "BLOCK_K": bk, "GROUP_M": gm, "W_KN": True, "UPCAST": False}, nw, ns), flush=True)
        for c in CANDIDATES_DOWN:
            for atomic in (False, True):
                bn, bk, gm, nw, ns = c
                dsig = {**gsig, "rw_ptr": "*fp32", "out_ptr": "*fp32" if atomic else "*bf16"}
                print(f"down    BLOCK_M {bm:2d} {c} {'atomic' if atomic else 'sum   '}:",
                      comp(_moe_down_kernel, dsig, {"SLOTS": slots, "G_P2": g_p2, "BLOCK_M": bm, "BLOCK_N": bn,
                           "BLOCK_K": bk, "GROUP_M": gm, "ATOMIC": atomic, "W_KN": True, "UPCAST": False}, nw, ns),
                      flush=True)


if __name__ == "__main__":
    if "--aot-check" in sys.argv:
        aot_check()
        sys.exit(0)
    if "--bench" in sys.argv:
        bench_main()
        sys.exit(0)
    dev = "cuda" if (torch.cuda.is_available() and not INTERPRET) else "cpu"
    dt = torch.bfloat16
    w = selftest(dev, dt)
    # Same rounding points as the reference: in the interpreter (numpy fp32 dots) ~exact;
    # on the GPU what is left is the fp32 summation order of tl.dot, and the odd one-ulp
    # flip of a bf16 activation that it causes.
    tol = 1e-5 if INTERPRET else 5e-3
    print(f"[selftest] device {dev} (interpreter: {INTERPRET}), {dt}: worst rel err {w:.2e} "
          f"-> {'PASS' if w < tol else 'FAIL'}")
    sys.exit(0 if w < tol else 1)
