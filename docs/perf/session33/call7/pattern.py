"""Does the expert tiles' DRAM access pattern cost bandwidth? (session 33, call 7)

The bf16 expert tiles read a CTA's 128 weight rows in k-steps of 64 columns: each step 128
pieces of 128 bytes, 4 KB apart (a row is 2048 bf16). At batch 1 the gate_up tiles read their
weights at ~82% of the copy bandwidth. This times three ways to read the same 80 experts of
1024 x 2048 bf16 (320 MB, as a batch-1 step's gate_up touches), each program summing what it
reads (one float out, so nothing is skipped). Call 7's first run (first/) took 80 experts and
printed TB/s rounded to whole numbers; this one takes 320 (1.34 GB).
  tiles:   a program 128 rows, 32 steps of [128 x 64]  (the tiles' pattern)
  rows:    a program 128 rows, 64 steps of [2 x 2048]  (whole rows, 8 KB contiguous a step)
  flat:    a program 512 KB contiguous, 64 steps of 8 KB (a plain copy's pattern)
Triton, CUDA events, median of 50 after 10 warm-ups.
"""
import torch
import triton
import triton.language as tl


@triton.jit
def tiles(w, out, K: tl.constexpr, BR: tl.constexpr, BK: tl.constexpr):
    pid = tl.program_id(0)
    r = pid * BR + tl.arange(0, BR)[:, None]
    acc = tl.zeros((BR, BK), dtype=tl.float32)
    for k0 in range(0, K, BK):
        c = k0 + tl.arange(0, BK)[None, :]
        acc += tl.load(w + r * K + c).to(tl.float32)
    tl.store(out + pid, tl.sum(acc))


@triton.jit
def rows(w, out, K: tl.constexpr, BR: tl.constexpr, RS: tl.constexpr):
    pid = tl.program_id(0)
    acc = tl.zeros((RS, K), dtype=tl.float32)
    for r0 in range(0, BR, RS):
        r = pid * BR + r0 + tl.arange(0, RS)[:, None]
        c = tl.arange(0, K)[None, :]
        acc += tl.load(w + r * K + c).to(tl.float32)
    tl.store(out + pid, tl.sum(acc))


@triton.jit
def flat(w, out, N: tl.constexpr, B: tl.constexpr):
    pid = tl.program_id(0)
    acc = tl.zeros((B,), dtype=tl.float32)
    for i in range(0, N, B):
        acc += tl.load(w + pid * N + i + tl.arange(0, B)).to(tl.float32)
    tl.store(out + pid, tl.sum(acc))


def time_ms(f):
    for _ in range(10):
        f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(50):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def main():
    E, R, K = 320, 1024, 2048  # 1.34 GB: long enough that launch and tail do not dominate
    w = torch.randn(E * R, K, device="cuda", dtype=torch.bfloat16)
    gb = w.numel() * 2 / 1e9
    progs = E * R // 128
    out = torch.empty(progs, device="cuda", dtype=torch.float32)
    flush = torch.empty(256 << 20, device="cuda", dtype=torch.uint8)
    runs = {
        "tiles [128 x 64], 4 warps, 4 stages": lambda: tiles[(progs,)](w, out, K, 128, 64, num_warps=4, num_stages=4),
        "tiles [128 x 64], 4 warps, 6 stages": lambda: tiles[(progs,)](w, out, K, 128, 64, num_warps=4, num_stages=6),
        "tiles [128 x 128], 8 warps, 3 stages": lambda: tiles[(progs,)](w, out, K, 128, 128, num_warps=8, num_stages=3),
        "rows [2 x 2048], 8 warps, 3 stages": lambda: rows[(progs,)](w, out, K, 128, 2, num_warps=8, num_stages=3),
        "flat 8 KB steps, 4 warps, 4 stages": lambda: flat[(progs,)](w, out, R * K * 128 // R, 4096, num_warps=4, num_stages=4),
    }
    print(f"{torch.cuda.get_device_name()}: {gb:.2f} GB of bf16 weights, {progs} programs of 512 KB")
    copy_dst = torch.empty_like(w)
    ms = time_ms(lambda: copy_dst.copy_(w))  # GB / ms = TB/s
    print(f"{'torch copy (reads and writes it)':40s} {ms:7.3f} ms {2 * gb / ms:6.2f} TB/s")
    for name, f in runs.items():
        flush.zero_()
        ms = time_ms(f)
        print(f"{name:40s} {ms:7.3f} ms {gb / ms:6.2f} TB/s read")


if __name__ == "__main__":
    main()
