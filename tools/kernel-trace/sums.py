#!/usr/bin/env python3
"""Kernel time by name over the last forwards of a traced `dllm` run (kernel_trace.c's output):
where a prefill's time goes. A forward is the kernels from one `embed_gather` to the next
(timeline.py's steps); `bench prefill` at 4,096 x 8 ends in five (four of 8,192 prompt tokens,
then the first block's).

    python3 tools/kernel-trace/sums.py kernel-trace.tsv [--forwards 5] [--most 25]
"""
import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timeline import is_copy, load, steps_of  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--forwards", type=int, default=5, help="the last this many forwards")
    ap.add_argument("--most", type=int, default=25, help="kernel names listed")
    a = ap.parse_args()
    fwds = steps_of([k for k in load(a.trace) if not is_copy(k)])[-a.forwards:]
    spans = [round((f[-1]["end"] - f[0]["start"]) / 1e6, 2) for f in fwds]
    print("forwards:", [len(f) for f in fwds], "kernels;", spans, "ms spans")
    tot, n = collections.Counter(), collections.Counter()
    for k in (k for f in fwds for k in f):
        tot[k["name"]] += k["end"] - k["start"]
        n[k["name"]] += 1
    s = sum(tot.values())
    for name, v in tot.most_common(a.most):
        print(f"{v/1e6:10.3f} ms {100*v/s:5.1f}% {n[name]:6d}  {name}")
    print(f"{s/1e6:10.3f} ms in all")


if __name__ == "__main__":
    main()
