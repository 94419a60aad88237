#!/usr/bin/env python3
"""Throughput of a running `dllm serve` under staggered traffic: CLIENTS clients, each sending one
/generate request after another, with prompt lengths and max_new_tokens drawn per request. The
clients start spread over the warm-up, so requests reach the engine in different phases of their
blocks. A lockstep benchmark (`dllm bench step`, `bench generate`) cannot show what that costs:
more distinct step shapes (tokens in a step, rows predicted) for the CUDA graphs to record.

It counts the tokens of the requests that finish inside the measured window (after the warm-up)
and prints one JSON line: completed requests, generated tokens, tokens/s, and the mean and p90
latency of those requests; and, from the server's /metrics read as the window opens and closes,
the engine steps in the window and how many of them replayed a CUDA graph (the others ran
eagerly: a step carrying an arriving prompt always does).

    python3 tools/serve_load.py --url http://127.0.0.1:8188 --clients 128 --warmup 20 --duration 40

The prompts are random token ids in [--id-low, --id-high), a range that holds no special token of
LLaDA2's vocabulary. Python standard library only; every request has a deadline.
"""

import argparse
import json
import random
import threading
import time
import urllib.request


def one_request(url, ids, max_new, temperature, top_p, timeout):
    body = {"input_ids": ids, "sampling_params": {"max_new_tokens": max_new, "temperature": temperature, "top_p": top_p}}
    req = urllib.request.Request(url + "/generate", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        out = json.loads(r.read())
    meta = out.get("meta_info", {})
    return int(meta.get("completion_tokens", 0))


def scrape(url, names, timeout=10):
    """The values of `names` in the server's /metrics (None for one it does not report)."""
    with urllib.request.urlopen(url + "/metrics", timeout=timeout) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            values[name] = float(value)
    return {n: values.get(n) for n in names}


STEPS = "dllm:denoising_steps_total"
REPLAYS = "dllm:cuda_graph_replays_total"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8188")
    ap.add_argument("--clients", type=int, default=128)
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds before the window opens; the clients start spread over it")
    ap.add_argument("--duration", type=float, default=40.0, help="the measured window, seconds")
    ap.add_argument("--prompt-len", default="256,1024", help="prompt tokens, drawn uniformly in [lo, hi]")
    ap.add_argument("--max-new", default="64,96,128,192,256", help="max_new_tokens, one drawn a request from this list")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--id-low", type=int, default=1000)
    ap.add_argument("--id-high", type=int, default=100000)
    ap.add_argument("--timeout", type=float, default=300.0, help="one request's deadline, seconds")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    lo, hi = (int(x) for x in a.prompt_len.split(","))
    max_news = [int(x) for x in a.max_new.split(",")]

    t0 = time.monotonic()
    window = (t0 + a.warmup, t0 + a.warmup + a.duration)
    done = []  # (finish time, tokens, latency)
    errors = []
    lock = threading.Lock()

    def client(i):
        rng = random.Random(a.seed * 100003 + i)
        time.sleep(a.warmup * i / a.clients)
        while time.monotonic() < window[1]:
            ids = [rng.randrange(a.id_low, a.id_high) for _ in range(rng.randint(lo, hi))]
            start = time.monotonic()
            try:
                tokens = one_request(a.url, ids, rng.choice(max_news), a.temperature, a.top_p, a.timeout)
            except Exception as e:  # noqa: BLE001 (reported, not hidden)
                with lock:
                    errors.append(repr(e)[:200])
                time.sleep(0.5)  # a refused connection fails at once: no spinning on a down server
                continue
            end = time.monotonic()
            with lock:
                done.append((end, tokens, end - start))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(a.clients)]
    for t in threads:
        t.start()
    marks = []  # /metrics as the window opens and as it closes
    for edge in window:
        time.sleep(max(0.0, edge - time.monotonic()))
        try:
            marks.append(scrape(a.url, (STEPS, REPLAYS)))
        except Exception as e:  # noqa: BLE001 (reported, not hidden)
            errors.append("/metrics: " + repr(e)[:200])
    for t in threads:
        t.join(timeout=a.warmup + a.duration + a.timeout)
    delta = {}
    if len(marks) == 2:
        for n in (STEPS, REPLAYS):
            if marks[0][n] is not None and marks[1][n] is not None:
                delta[n] = int(marks[1][n] - marks[0][n])
    inside = [d for d in done if window[0] <= d[0] <= window[1]]
    lat = sorted(d[2] for d in inside)
    tokens = sum(d[1] for d in inside)
    print(json.dumps({
        "clients": a.clients,
        "window_s": a.duration,
        "requests": len(inside),
        "tokens": tokens,
        "tokens_per_s": round(tokens / a.duration, 1),
        "latency_mean_s": round(sum(lat) / len(lat), 3) if lat else None,
        "latency_p90_s": round(lat[int(0.9 * (len(lat) - 1))], 3) if lat else None,
        "steps": delta.get(STEPS),
        "graph_replays": delta.get(REPLAYS),
        "errors": len(errors),
        "first_errors": errors[:3],
    }))


if __name__ == "__main__":
    main()
