#!/usr/bin/env python3
"""Plot one denoising step's time against batch size: ours vs the PyTorch baseline vs the floor.

Reads docs/perf/step-mini.json:
  {"device", "commit", "runs": [{"batch", "tokens", "prefix", "step_ms", "floor_ms", "over_floor",
                                 "baseline_ms", "speedup_vs_baseline"}, ...]}
and writes docs/perf/step-mini.png (log-scale batch axis). Runs with another prefix than
the most common one, or other block tokens than --tokens (default: random where the file has
such runs), are left out (one curve per quantity); a missing or null value is skipped. A
speedup is written only where the JSON quotes one (`dllm bench step` leaves it out when the
baseline routed to more than 5% more or fewer experts).

  python3 tools/plot_step.py [--json docs/perf/step-mini.json] [--out docs/perf/step-mini.png]
"""

import argparse
import collections
import json
import os
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default="docs/perf/step-mini.json")
    p.add_argument("--out", help="PNG path (default: the JSON path with .png)")
    p.add_argument("--prefix", type=int, help="plot the runs with this prefix length (default: the most common)")
    p.add_argument("--tokens", choices=["random", "mask"],
                   help="plot the runs whose block carried these tokens (default: random if any, else all)")
    p.add_argument("--logy", action="store_true", help="log-scale time axis too")
    args = p.parse_args()
    out = args.out or os.path.splitext(args.json)[0] + ".png"

    with open(args.json) as fh:
        data = json.load(fh)
    runs = [r for r in data.get("runs", []) if r.get("batch") is not None]
    if not runs:
        sys.exit(f"{args.json}: no runs")
    modes = {r.get("tokens") for r in runs}
    tokens = args.tokens or ("random" if "random" in modes else None)
    if tokens is not None:
        runs = [r for r in runs if r.get("tokens", "mask") == tokens]
        if not runs:
            sys.exit(f"{args.json}: no runs with --tokens {tokens}")
    prefixes = collections.Counter(r.get("prefix") for r in runs)
    prefix = args.prefix if args.prefix is not None else prefixes.most_common(1)[0][0]
    runs = sorted((r for r in runs if r.get("prefix") == prefix), key=lambda r: r["batch"])
    if not runs:
        sys.exit(f"{args.json}: no runs with prefix {prefix}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    def series(key):
        pts = [(r["batch"], r[key]) for r in runs if isinstance(r.get(key), (int, float))]
        return [b for b, _ in pts], [v for _, v in pts]

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=150)
    styles = [
        ("step_ms", "dllm (ours)", dict(color="tab:blue", marker="o", lw=2.2)),
        ("baseline_ms", "PyTorch baseline", dict(color="tab:orange", marker="s", lw=1.8)),
        ("floor_ms", "floor", dict(color="tab:gray", marker="", lw=1.5, ls="--")),
    ]
    for key, label, st in styles:
        xs, ys = series(key)
        if xs:
            ax.plot(xs, ys, label=label, **st)

    # speedup labels next to our points
    for r in runs:
        sp = r.get("speedup_vs_baseline")
        # Files from before the experts check carried no baseline_experts_per_layer.
        if not isinstance(sp, (int, float)) and "baseline_experts_per_layer" not in r \
                and isinstance(r.get("baseline_ms"), (int, float)) \
                and isinstance(r.get("step_ms"), (int, float)) and r["step_ms"] > 0:
            sp = r["baseline_ms"] / r["step_ms"]
        if isinstance(sp, (int, float)) and isinstance(r.get("step_ms"), (int, float)):
            ax.annotate(f"{sp:.2f}x", (r["batch"], r["step_ms"]), textcoords="offset points",
                        xytext=(0, 7), ha="center", fontsize=8, color="tab:blue")

    batches = sorted({r["batch"] for r in runs})
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(batches))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(ScalarFormatter())
    if args.logy:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set_xlabel("batch (requests)")
    ax.set_ylabel("denoising step (ms)")
    title = f"LLaDA2 {data.get('preset', 'mini')}: one denoising step, prefix {prefix}" \
        + (f", block tokens {tokens}" if tokens else "")
    sub = " · ".join(str(x) for x in (data.get("device"), data.get("commit") and f"commit {str(data['commit'])[:10]}") if x)
    ax.set_title(title + (f"\n{sub}" if sub else ""), fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
