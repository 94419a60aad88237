#!/usr/bin/env python3
"""Per-layer kernel timeline of a traced `dllm` run (tools/kernel-trace/kernel_trace.c's output).

A step is the kernels from one `embed_gather` (a forward's first kernel) to the next; a layer
starts at the norm before its QKV projection (the last `*rms_norm*` kernel before its
`qk_norm_rope_store*` or `qkv_rope_store*`). For the last `--steps` steps it prints the median over the middle
layers (the first and last layers differ) of each kernel of a layer, in the order they start:
  start  µs from the layer's start to the kernel's start;
  dur    µs from its start to its end (as the GPU timestamps it);
  gap    µs from the end of the kernel that started before it to its start: negative where the
         two overlapped (a programmatic dependent launch, a side stream), positive where the GPU
         ran nothing of this chain in between (launch latency, a dependency's drain);
then the layer's span, the step's span, and how much of the step some kernel was running.
With --gaps N it also lists each analysed step's N longest stretches where no kernel ran, with
the kernels on either side and the memcpys and memsets the GPU did in them (the trace records
those too, bracketed: "[memset 1028 B]"); they are kept out of the layer tables.

    python3 tools/kernel-trace/timeline.py kernel-trace.tsv [--steps 4] [--gaps 10]
"""
import argparse
import statistics
import sys


def short(name):
    """Our kernels keep their names; a mangled one (cuBLAS's) becomes 'cublas:' and its nested
    name's identifiers (namespace::kernel), template arguments left out."""
    if not name.startswith("_Z"):
        return name[:48]
    i, ids = (3 if name.startswith("_ZN") else 2), []
    while i < len(name) and name[i].isdigit():
        j = i
        while j < len(name) and name[j].isdigit():
            j += 1
        n = int(name[i:j])
        ids.append(name[j:j + n])
        i = j + n
        if not name.startswith("_ZN"):
            break
    return ("cublas:" + "::".join(ids))[:48]


def load(path):
    ks = []
    with open(path) as f:
        for line in f:
            p = line.rstrip("\n").split(" ", 9)
            if len(p) < 10:
                continue
            ks.append(dict(start=int(p[0]), end=int(p[1]), graph=int(p[2]), stream=int(p[4]),
                           grid=(int(p[5]), int(p[6]), int(p[7])), block=int(p[8]), name=short(p[9])))
    ks.sort(key=lambda k: k["start"])
    return ks


def is_copy(k):
    """A memcpy or memset record (kernel_trace.c writes their names in brackets)."""
    return k["name"].startswith("[")


def idle_gaps(step, copies):
    """The stretches of a step where no kernel ran: (start, end, kernel before, kernel after,
    the copies overlapping it), longest first."""
    gaps, prev = [], None
    for k in sorted(step, key=lambda k: k["start"]):
        if prev is not None and k["start"] > prev["end"]:
            a, b = prev["end"], k["start"]
            inside = [c["name"] for c in copies if c["start"] < b and c["end"] > a]
            gaps.append((a, b, prev["name"], k["name"], inside))
        if prev is None or k["end"] > prev["end"]:
            prev = k
    return sorted(gaps, key=lambda g: g[0] - g[1])


def steps_of(ks):
    starts = [i for i, k in enumerate(ks) if k["name"] == "embed_gather"]
    return [ks[a:b] for a, b in zip(starts, starts[1:] + [len(ks)])]


def is_rope(name):
    """The kernel that stores a layer's rotated K/V: the rope kernel, or the QKV projection with
    the rope store in its epilogue (`--fused-qkv-rope`)."""
    return name.startswith(("qk_norm_rope_store", "qkv_rope_store"))


def layers_of(step):
    ropes = [i for i, k in enumerate(step) if is_rope(k["name"])]
    starts = []
    for r in ropes:
        s = max((i for i in range(r) if "rms_norm" in step[i]["name"]), default=0)
        starts.append(s)
    return [step[a:b] for a, b in zip(starts, starts[1:] + [len(step)])]


def busy_us(ks):
    """Microseconds during which at least one of the kernels ran."""
    total, cur_s, cur_e = 0, None, None
    for k in sorted(ks, key=lambda k: k["start"]):
        if cur_e is None or k["start"] > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = k["start"], k["end"]
        else:
            cur_e = max(cur_e, k["end"])
    if cur_e is not None:
        total += cur_e - cur_s
    return total / 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--steps", type=int, default=4, help="the last N steps of the trace")
    ap.add_argument("--gaps", type=int, default=0, help="list each step's N longest stretches with no kernel running")
    a = ap.parse_args()
    everything = load(a.trace)
    ks = [k for k in everything if not is_copy(k)]
    copies = [k for k in everything if is_copy(k)]
    steps = [s for s in steps_of(ks) if any(is_rope(k["name"]) for k in s)]
    if not steps:
        sys.exit(f"{a.trace}: no step (no embed_gather followed by a layer)")
    steps = steps[-a.steps:]
    # The step's span ends where its last kernel ends (the next step's host work is not its own).
    print(f"{len(ks)} kernels and {len(copies)} memcpys and memsets, {len(steps)} steps analysed")
    for i, s in enumerate(steps):
        span = (max(k["end"] for k in s) - s[0]["start"]) / 1e3
        print(f"step {i}: span {span:8.1f} us, some kernel running {busy_us(s):8.1f} us, {len(s)} kernels, "
              f"{len(layers_of(s))} layers")
        if a.gaps:
            gaps = idle_gaps(s, copies)
            print(f"  {len(gaps)} stretches with no kernel running, {sum(b - e for e, b, *_ in gaps) / 1e3:.1f} us; the longest:")
            for e, b, before, after, inside in gaps[:a.gaps]:
                also = f"  during {', '.join(inside)}" if inside else ""
                print(f"  {(b - e) / 1e3:8.1f} us at {(e - s[0]['start']) / 1e3:8.1f}: {before} -> {after}{also}")
    # Middle layers: the same kernel sequence in each (by name), so positions line up.
    rows = {}
    spans = []
    for s in steps:
        ls = layers_of(s)
        for layer in ls[1:-1]:
            names = tuple(k["name"] for k in layer)
            t0 = layer[0]["start"]
            spans.append((layer[-1]["end"] - t0) / 1e3)
            for j, k in enumerate(layer):
                prev_end = layer[j - 1]["end"] if j else None
                r = rows.setdefault((names, j), dict(name=k["name"], start=[], dur=[], gap=[], grid=k["grid"], stream=k["stream"]))
                r["start"].append((k["start"] - t0) / 1e3)
                r["dur"].append((k["end"] - k["start"]) / 1e3)
                if prev_end is not None:
                    r["gap"].append((k["start"] - prev_end) / 1e3)
    seqs = {}
    for (names, j), r in rows.items():
        seqs.setdefault(names, []).append((j, r))
    med = statistics.median
    for names, rs in sorted(seqs.items(), key=lambda kv: -len(kv[1][0][1]["dur"])):
        n = len(rs[0][1]["dur"])
        print(f"\nlayer kind seen {n} times ({len(names)} kernels); medians, µs:")
        print(f"{'kernel':50s} {'start':>7s} {'dur':>7s} {'gap':>7s}  grid        stream")
        sum_dur = 0.0
        for j, r in sorted(rs, key=lambda x: x[0]):
            g = med(r["gap"]) if r["gap"] else float("nan")
            sum_dur += med(r["dur"])
            print(f"{r['name']:50s} {med(r['start']):7.1f} {med(r['dur']):7.1f} {g:7.1f}  {str(r['grid']):11s} {r['stream']}")
        print(f"{'sum of durations':50s} {'':7s} {sum_dur:7.1f}")
    if spans:
        print(f"\nmiddle layer span (first start to last end): median {med(spans):.1f} µs over {len(spans)} layers")


if __name__ == "__main__":
    main()
