#!/usr/bin/env python3
"""N local `dllm serve` replicas behind SGLang's model gateway (the `sglang-router` package).

    tools/setup-router.sh                                  # once: .venv-router with the gateway
    cargo build --release
    python3 tools/gateway.py --replicas 2                  # the tiny built-in model, gateway on :30000
    python3 tools/gateway.py --replicas 2 --model-path /models/LLaDA2.0-mini --policy round_robin \\
        -- --device cuda --tp-size 1                       # after --: flags for every replica

Replica i listens on 127.0.0.1:<port + 1 + i>; the gateway on 127.0.0.1:<port>. The script
waits until every replica answers /health and the gateway lists them all as healthy, prints the
URLs, and stops everything on Ctrl-C. Loopback only; every wait has a deadline.
On several nodes run the replicas and the gateway by hand instead: docs/SERVING.md.

tools/gateway_e2e.py uses the classes here. Python standard library only.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUTER_PYTHON = os.path.join(ROOT, ".venv-router", "bin", "python")
HOST = "127.0.0.1"


def free_port():
    """A port nothing listens on now (another process may take it before we do: rare on loopback)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def call(method, url, body=None, timeout=30.0):
    """(status, bytes) of one request; a refused or dropped connection raises OSError."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_json(url, timeout=10.0):
    status, body = call("GET", url, timeout=timeout)
    if status != 200:
        raise RuntimeError(f"GET {url}: {status} {body[:200]!r}")
    return json.loads(body)


def wait_until(what, ok, deadline_s, every_s=0.2):
    """Poll `ok()` (exceptions count as not yet) until it is truthy; raise after deadline_s."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        try:
            v = ok()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 -- any failure is "not ready yet"
            last = e
        time.sleep(every_s)
    raise TimeoutError(f"{what}: not within {deadline_s:.0f} s (last error: {last})")


def stop_process(p, grace_s=10.0):
    """SIGTERM, then SIGKILL after grace_s; reaps it."""
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(grace_s)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


class Replica:
    """One `dllm serve` on a loopback port; it can be killed and started again on that port."""

    def __init__(self, binary, port, serve_args, log_path):
        self.binary, self.port, self.serve_args, self.log_path = binary, port, serve_args, log_path
        self.url = f"http://{HOST}:{port}"
        self.proc = None

    def start(self, ready_s=120.0):
        log = open(self.log_path, "ab")
        cmd = [self.binary, "serve", "--host", HOST, "--port", str(self.port), *self.serve_args]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

        def up():
            if self.proc.poll() is not None:
                raise SystemExit(f"replica {self.url} exited ({self.proc.returncode}); see {self.log_path}")
            return call("GET", self.url + "/health", timeout=2)[0] == 200

        wait_until(f"replica {self.url} /health", up, ready_s)

    def kill(self):
        """SIGKILL, as a lost node: no drain, connections drop."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        stop_process(self.proc)

    def metric(self, name):
        """A value from this replica's /metrics (0 when absent)."""
        _, text = call("GET", self.url + "/metrics", timeout=5)
        for line in text.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0


class Gateway:
    """SGLang's model gateway (`python -m sglang_router.launch_router`) over the given workers."""

    def __init__(self, worker_urls, port, policy, log_path, extra=()):
        self.worker_urls, self.port, self.policy, self.log_path = worker_urls, port, policy, log_path
        self.extra = list(extra)
        self.url = f"http://{HOST}:{port}"
        self.proc = None

    def start(self, ready_s=60.0):
        if not os.path.exists(ROUTER_PYTHON):
            raise SystemExit(f"no {ROUTER_PYTHON}: run tools/setup-router.sh first")
        cmd = [
            ROUTER_PYTHON, "-m", "sglang_router.launch_router",
            "--host", HOST, "--port", str(self.port),
            # Its Prometheus exporter otherwise takes 0.0.0.0:29000.
            "--prometheus-host", HOST, "--prometheus-port", str(free_port()),
            "--policy", self.policy,
            "--worker-urls", *self.worker_urls,
            *self.extra,
        ]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.wait_healthy(len(self.worker_urls), ready_s)

    def workers(self):
        """url -> is_healthy, as the gateway sees its workers."""
        return {w["url"]: w.get("is_healthy", False) for w in get_json(self.url + "/workers").get("workers", [])}

    def wait_healthy(self, n, deadline_s):
        def ready():
            if self.proc.poll() is not None:
                raise SystemExit(f"the gateway exited ({self.proc.returncode}); see {self.log_path}")
            return sum(self.workers().values()) >= n

        wait_until(f"gateway {self.url} with {n} healthy workers", ready, deadline_s)

    def stop(self):
        stop_process(self.proc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "dllm"))
    ap.add_argument("--model-path", help="checkpoint directory (default: the built-in tiny model)")
    ap.add_argument("--port", type=int, default=30000, help="the gateway's; replicas take the next ones")
    ap.add_argument("--policy", default="cache_aware", help="the gateway's: cache_aware, round_robin, power_of_two, random")
    ap.add_argument("--log-dir", default=".", help="where replica-<i>.log and gateway.log go")
    ap.add_argument("serve_args", nargs="*", help="after --: flags for every `dllm serve`")
    a = ap.parse_args()
    if a.replicas < 1:
        ap.error("--replicas must be at least 1")
    serve_args = (["--model-path", a.model_path] if a.model_path else []) + a.serve_args
    replicas = [
        Replica(a.binary, a.port + 1 + i, serve_args, os.path.join(a.log_dir, f"replica-{i}.log")) for i in range(a.replicas)
    ]
    gw = Gateway([r.url for r in replicas], a.port, a.policy, os.path.join(a.log_dir, "gateway.log"))
    try:
        for r in replicas:
            r.start()
            print(f"replica {r.url} up (log {r.log_path})", flush=True)
        gw.start()
        print(f"gateway {gw.url} up, policy {a.policy}, {a.replicas} workers (log {gw.log_path}); Ctrl-C stops all", flush=True)
        while all(r.proc.poll() is None for r in replicas) and gw.proc.poll() is None:
            time.sleep(1)
        print("a replica or the gateway exited; stopping the rest", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C must not leave the children running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        gw.stop()
        for r in replicas:
            r.stop()


def _interrupt(*_):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children on SIGTERM too
    main()
