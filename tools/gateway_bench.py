#!/usr/bin/env python3
"""A shared-prefix workload through SGLang's model gateway, once per routing policy.

Groups of requests share a long prefix (a system prompt, a document) and differ in a short
suffix. The gateway's `cache_aware` policy sends a group to one replica so that the replica's
prefix cache serves the shared part; `round_robin` spreads every group over all replicas.
Per policy this prints requests per second, the mean and p90 latency, and the prompt tokens the
replicas served from cache (the sum of `meta_info.cached_tokens`).

dllm has no prefix cache yet: every request prefills its whole prompt, `cached_tokens` is 0, and
the policies should come out alike. Once the prefix cache lands, this is the measurement that
shows whether `cache_aware` pays off.

    tools/setup-router.sh && cargo build --release
    .venv-router/bin/python tools/gateway_bench.py                       # tiny model, CPU
    .venv-router/bin/python tools/gateway_bench.py --model-path /models/LLaDA2.0-mini -- --device cuda
Loopback only; every request has a deadline.
"""

import argparse
import concurrent.futures as cf
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gateway import ROOT, Gateway, Replica, call, free_port  # noqa: E402


def workload(groups, per_group, prefix_words, seed):
    """(prompt, group) pairs: each group's prompts share a prefix of prefix_words words."""
    rng = random.Random(seed)
    words = "river stone lamp quiet orbit paper signal garden copper window thread harbor".split()
    out = []
    for g in range(groups):
        prefix = " ".join(rng.choice(words) for _ in range(prefix_words))
        out += [(f"Document {g}: {prefix}\nQuestion {i}: what comes next?", g) for i in range(per_group)]
    rng.shuffle(out)
    return out


def run_policy(a, policy, prompts, serve_args, work):
    replicas = [Replica(a.binary, free_port(), serve_args, os.path.join(work, f"{policy}-replica-{i}.log")) for i in range(a.replicas)]
    gw = Gateway([r.url for r in replicas], free_port(), policy, os.path.join(work, f"{policy}-gateway.log"))
    try:
        for r in replicas:
            r.start()
        gw.start()
        sampling = {"max_new_tokens": a.max_new_tokens, "ignore_eos": True, "temperature": 0}

        def one(prompt):
            t0 = time.monotonic()
            s, b = call("POST", gw.url + "/generate", {"text": prompt, "sampling_params": sampling}, timeout=a.request_timeout_s)
            if s != 200:
                raise RuntimeError(f"{s}: {b[:200]!r}")
            return time.monotonic() - t0, json.loads(b)["meta_info"].get("cached_tokens", 0)

        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(a.concurrency) as pool:
            results = list(pool.map(one, [p for p, _ in prompts]))
        wall = time.monotonic() - t0
        per_replica = [int(r.metric("dllm:num_requests_total")) for r in replicas]
    finally:
        gw.stop()
        for r in replicas:
            r.stop()
    lat = sorted(t for t, _ in results)
    return {
        "policy": policy,
        "requests": len(lat),
        "req_per_s": round(len(lat) / wall, 2),
        "mean_s": round(sum(lat) / len(lat), 3),
        "p90_s": round(lat[int(0.9 * (len(lat) - 1))], 3),
        "cached_tokens": sum(c for _, c in results),
        "per_replica": per_replica,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "dllm"))
    ap.add_argument("--model-path", help="default: a tiny model made here")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--policies", default="round_robin,cache_aware")
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--per-group", type=int, default=8)
    ap.add_argument("--prefix-words", type=int, default=300)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--request-timeout-s", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("serve_args", nargs="*", help="after --: flags for every `dllm serve`")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="dllm-gateway-bench-")
    model = a.model_path
    if not model:
        model = os.path.join(work, "llada2-tiny")
        made = subprocess.run([a.binary, "make-model", "--out", model], capture_output=True, text=True, timeout=120)
        if made.returncode != 0:
            sys.exit(made.stderr)
        a.serve_args = ["--device", "cpu", *a.serve_args]
    serve_args = ["--model-path", model, *a.serve_args]
    prompts = workload(a.groups, a.per_group, a.prefix_words, a.seed)
    print(f"{len(prompts)} requests: {a.groups} groups sharing a {a.prefix_words}-word prefix, concurrency {a.concurrency}; logs in {work}")
    for policy in a.policies.split(","):
        print(json.dumps(run_policy(a, policy, prompts, serve_args, work)), flush=True)


if __name__ == "__main__":
    main()
