#!/usr/bin/env python3
"""Hostile and careless traffic against `dllm serve` (issue 11), with `/health` probed throughout.

Cases, each while a separate probe process GETs /health on a fresh connection every ~50 ms:
  huge       two 15 MiB `text` prompts at once (under the 16 MiB body limit): both must be refused
             with a 400 that says why; then two requests of 64 prompts just under that byte
             bound, which are tokenized (and then refused: too many tokens for the context);
             the server's memory must come back (the case runs twice: what the tokenizer
             threads keep after the first round must not grow in the second).
  many       one request holding 1,000 prompts; a one-prompt request sent while it runs must
             finish long before it (its prompts take turns with everyone else's).
  slowloris  300 connections that send half a request head and stop: /health must still answer,
             and the server must close them once --header-read-timeout has passed.
Per case it prints the largest /health latency (bound: 100 ms), the server's RSS before and
after, and what the case measured; it exits non-zero if any bound fails.

Loopback only, every loop bounded. Python standard library only.

    cargo build --release && python3 tools/load_test.py            # starts target/release/dllm
    python3 tools/load_test.py --binary /path/to/dllm
    python3 tools/load_test.py --url http://127.0.0.1:30000 --pid 1234   # a running server
A server this script starts runs the tiny built-in model with --max-prompts-per-request 1000
(the default, 256, would refuse the many case outright) and --header-read-timeout 2.
"""

import argparse
import json
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

HEALTH_BOUND_S = 0.100
PROBE_EVERY_S = 0.050
HEADER_READ_TIMEOUT_S = 2.0


# ----------------------------------------------------------------------------------------------
# HTTP over raw sockets (every call has a deadline).


def http(host, port, method, path, body=None, timeout=120.0):
    """One request on a fresh connection: (status, body bytes). Status 0: no answer."""
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    raw = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(head.encode() + b"\r\n" + data)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                raw += chunk
    except OSError:
        pass
    if not raw.startswith(b"HTTP/1.1 "):
        return 0, raw
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    if b"transfer-encoding: chunked" in head.lower():
        rest = dechunk(rest)
    return status, rest


def dechunk(b):
    out = b""
    while b"\r\n" in b:
        size, _, b = b.partition(b"\r\n")
        n = int(size.strip() or b"0", 16)
        if n == 0:
            break
        out += b[:n]
        b = b[n + 2 :]
    return out


# ----------------------------------------------------------------------------------------------
# The /health probe: a process of its own, so that this script's work never delays it.


def probe_loop(host, port, stop, out):
    samples = []
    # Bounded: a probe takes at most 5 s, and the case that runs it at most a few minutes.
    for _ in range(100_000):
        if stop.is_set():
            break
        t0 = time.monotonic()
        status, _ = http(host, port, "GET", "/health", timeout=5.0)
        samples.append((status, time.monotonic() - t0))
        time.sleep(max(0.0, PROBE_EVERY_S - (time.monotonic() - t0)))
    out.put(samples)


class Probe:
    def __init__(self, host, port):
        self.stop, self.out = mp.Event(), mp.Queue()
        self.proc = mp.Process(target=probe_loop, args=(host, port, self.stop, self.out), daemon=True)

    def __enter__(self):
        self.proc.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.samples = self.out.get(timeout=30)
        self.proc.join(timeout=10)

    def worst(self):
        bad = [s for s, _ in self.samples if s != 200]
        return max((t for _, t in self.samples), default=float("inf")), len(self.samples), len(bad)


def rss_mib(pid):
    if pid is None:
        return float("nan")
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ----------------------------------------------------------------------------------------------
# The cases: each returns (lines to print, failures).


def post_twice_at_once(host, port, body, timeout, keep):
    """POST `body` to /generate on two connections at once: per request (status, seconds, the
    first `keep` bytes of the reply), or None where no answer came within the timeout."""
    results = [None, None]

    def send(i):
        t0 = time.monotonic()
        status, reply = http(host, port, "POST", "/generate", body, timeout=timeout)
        results[i] = (status, time.monotonic() - t0, reply[:keep].decode(errors="replace"))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout + 30)
    return results


def case_huge(host, port):
    text = "a" * (15 << 20)
    body = json.dumps({"text": text, "sampling_params": {"max_new_tokens": 8}}).encode()
    results = post_twice_at_once(host, port, body, timeout=120, keep=200)
    lines, fails = [], []
    bound = None
    for i, r in enumerate(results):
        if r is None:
            fails.append(f"huge prompt {i}: no answer")
            continue
        status, took, reply = r
        lines.append(f"15 MiB prompt {i}: HTTP {status} in {took * 1e3:.0f} ms: {reply}")
        if status != 400:
            fails.append(f"huge prompt {i}: HTTP {status}, not 400")
        m = re.search(r"make (\d+) bytes", reply)
        bound = int(m.group(1)) if m else bound
    if bound is None:
        return lines, fails + ["the 400 did not state the byte bound"]
    # Prompts just under the bound are tokenized, on the server's pool.
    long_prompt = "".join(chr(ord("a") + (i * 7) % 26) for i in range(bound - 64))
    body = json.dumps({"text": [long_prompt] * 64, "sampling_params": {"max_new_tokens": 8}}).encode()
    results = post_twice_at_once(host, port, body, timeout=300, keep=160)
    for i, r in enumerate(results):
        if r is None:
            fails.append(f"64 long prompts {i}: no answer")
            continue
        status, took, reply = r
        lines.append(f"64 prompts of {len(long_prompt)} bytes ({i}): HTTP {status} in {took * 1e3:.0f} ms: {reply}")
        if status != 400:
            fails.append(f"64 long prompts {i}: HTTP {status}, not 400")
    return lines, fails


def case_many(host, port, prompts=1000):
    sp = {"temperature": 0, "max_new_tokens": 32, "ignore_eos": True}
    body = json.dumps({"text": [f"Prompt {i}:" for i in range(prompts)], "sampling_params": sp}).encode()
    big = {}

    def send_big():
        t0 = time.monotonic()
        status, reply = http(host, port, "POST", "/generate", body, timeout=600)
        big.update(status=status, took=time.monotonic() - t0, reply=reply[:200].decode(errors="replace"))

    t0 = time.monotonic()
    thread = threading.Thread(target=send_big)
    thread.start()
    # Wait (bounded) until its prompts are queued, then send one small request.
    for _ in range(200):
        _, m = http(host, port, "GET", "/metrics", timeout=5)
        q = re.search(rb"^dllm:num_queue_reqs (\d+)", m, re.M)
        if q and int(q.group(1)) >= prompts // 2:
            break
        time.sleep(0.01)
    sent_after = time.monotonic() - t0
    t1 = time.monotonic()
    status, reply = http(host, port, "POST", "/generate", {"text": "Hello", "sampling_params": sp}, timeout=600)
    small = time.monotonic() - t1
    thread.join(timeout=650)
    lines = [
        f"{prompts}-prompt request: HTTP {big.get('status')} in {big.get('took', float('nan')):.2f} s",
        f"small request sent {sent_after:.2f} s after it: HTTP {status}, waited {small * 1e3:.0f} ms",
    ]
    fails = []
    if big.get("status") != 200:
        fails.append(f"the {prompts}-prompt request got HTTP {big.get('status')}: {big.get('reply')}")
    if status != 200:
        fails.append(f"the small request got HTTP {status}: {reply[:200]!r}")
    if "took" in big and not small * 4 < big["took"] - sent_after:
        fails.append(f"the small request waited {small:.2f} s, not far less than the big one's {big['took'] - sent_after:.2f} s left")
    return lines, fails


def case_slowloris(host, port, n=300, header_timeout=HEADER_READ_TIMEOUT_S):
    conns = []
    t0 = time.monotonic()
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: " + host.encode() + b"\r\nX-Slow: ")
            conns.append(s)
        except OSError:
            break
    opened = len(conns)
    # Hold them while the probe runs, then see the server close them (bounded wait).
    deadline = t0 + header_timeout + 10
    closed = 0
    pending = list(conns)
    while pending and time.monotonic() < deadline:
        still = []
        for s in pending:
            s.settimeout(0.001)
            try:
                if s.recv(1 << 12) == b"":
                    closed += 1
                    continue
                closed += 1  # an answer (408) before the close counts as closed too
            except socket.timeout:
                still.append(s)
            except OSError:
                closed += 1
        pending = still
        time.sleep(0.05)
    took = time.monotonic() - t0
    for s in conns:
        s.close()
    lines = [f"{opened} half-open connections; the server closed {closed} of them within {took:.1f} s"]
    fails = []
    if opened < n:
        fails.append(f"only {opened} of {n} connections could be opened")
    if closed < opened:
        fails.append(f"{opened - closed} half-open connections were still open after {took:.1f} s")
    return lines, fails


# ----------------------------------------------------------------------------------------------


def start_server(binary):
    cmd = [binary, "serve", "--host", "127.0.0.1", "--port", "0", "--max-prompts-per-request", "1000"]
    cmd += ["--header-read-timeout", str(HEADER_READ_TIMEOUT_S), "--log-level", "info"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    log = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        log.append(line)
        m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
        if m:
            # Keep reading its log so that it never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, int(m.group(1))
    proc.kill()
    sys.exit("the server did not start:\n" + "".join(log))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/dllm", help="the dllm binary to start (default: %(default)s)")
    ap.add_argument("--url", help="test a running server instead (loopback only)")
    ap.add_argument("--pid", type=int, help="with --url: the server's process id, to read its RSS")
    ap.add_argument("--cases", default="huge,huge,many,slowloris", help="which cases, comma-separated (default: %(default)s)")
    args = ap.parse_args()

    proc = None
    if args.url:
        u = urllib.parse.urlparse(args.url)
        host, port, pid = u.hostname, u.port or 80, args.pid
        if host not in ("127.0.0.1", "localhost", "::1"):
            sys.exit("--url must be a loopback address")
        header_timeout = 15.0
    else:
        proc, port = start_server(args.binary)
        host, pid, header_timeout = "127.0.0.1", proc.pid, HEADER_READ_TIMEOUT_S
    failed = []
    try:
        status, _ = http(host, port, "GET", "/health", timeout=10)
        if status != 200:
            sys.exit(f"/health answers {status}")
        cases = {
            "huge": lambda: case_huge(host, port),
            "many": lambda: case_many(host, port),
            "slowloris": lambda: case_slowloris(host, port, header_timeout=header_timeout),
        }
        for name in args.cases.split(","):
            before = rss_mib(pid)
            with Probe(host, port) as probe:
                lines, fails = cases[name]()
            time.sleep(1.0)  # let the server finish freeing what the case used
            after = rss_mib(pid)
            worst, n, bad = probe.worst()
            print(f"== {name}")
            for line in lines:
                print(f"   {line}")
            print(f"   /health: {n} probes, {bad} not 200, max latency {worst * 1e3:.1f} ms (bound {HEALTH_BOUND_S * 1e3:.0f} ms)")
            print(f"   server RSS: {before:.0f} MiB before, {after:.0f} MiB after")
            if worst >= HEALTH_BOUND_S or bad:
                fails.append(f"/health: max {worst * 1e3:.1f} ms, {bad} failed probes")
            # What a case may leave allocated: a little, never the hundreds of MiB it handled.
            if after - before > 64:
                fails.append(f"RSS grew by {after - before:.0f} MiB")
            for f in fails:
                print(f"   FAIL: {f}")
            failed += [f"{name}: {f}" for f in fails]
    finally:
        if proc:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print("all bounds held" if not failed else f"{len(failed)} bound(s) failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
