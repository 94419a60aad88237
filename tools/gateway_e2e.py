#!/usr/bin/env python3
"""End to end: two `dllm serve` replicas (the tiny model, CPU) behind SGLang's model gateway.

Checks, in order (each prints one line; the last line counts them):
  routes      /generate (plain and streaming), /v1/completions, /v1/chat/completions and
              /v1/responses (plain and streaming) and /v1/models through the gateway; its
              /get_loads reads every replica's /get_load; its /flush_cache reaches every replica
  spread      requests through the gateway land on both replicas (their /metrics count them)
  leave       a client that gives up (plain and streaming): the request is cancelled on its replica
  kill        a load in flight on both replicas, one replica SIGKILLed: each request ends within
              its deadline; those that fail number at most what the killed replica held; every
              other one finishes; new requests all succeed, on the survivor
  restart     the killed replica started again on its port: the gateway routes to it again
Loopback only; every wait and request has a deadline, and the whole run one of --deadline-s.

    tools/setup-router.sh && cargo build --release
    .venv-router/bin/python tools/gateway_e2e.py [--binary target/release/dllm]
tests/gateway.rs runs it under `cargo test` when .venv-router exists.
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gateway import HOST, ROOT, Gateway, Replica, call, free_port, get_json, wait_until  # noqa: E402

REQUEST_TIMEOUT_S = 60.0
# Enough tokens that a request on the tiny CPU model is still running when its replica dies.
LOAD_TOKENS = 256
LOAD_REQUESTS = 12
AFTER_KILL_REQUESTS = 8

# The gateway's defaults suit long-lived fleets (a health check a minute); these let it notice a
# dead or returning replica within seconds, and give up on a request before our own deadline.
GATEWAY_FLAGS = [
    "--health-check-interval-secs", "1",
    "--health-check-timeout-secs", "2",
    "--health-failure-threshold", "1",
    "--health-success-threshold", "1",
    "--cb-timeout-duration-secs", "2",
    "--request-timeout-secs", "45",
    "--worker-startup-timeout-secs", "60",
]


class Checks:
    def __init__(self):
        self.passed, self.failed = 0, 0

    def run(self, name, fn):
        t0 = time.monotonic()
        try:
            detail = fn()
            self.passed += 1
            print(f"PASS {name} ({time.monotonic() - t0:.1f} s){': ' + detail if detail else ''}", flush=True)
        except Exception as e:  # noqa: BLE001 -- report and go on to the next check
            self.failed += 1
            print(f"FAIL {name} ({time.monotonic() - t0:.1f} s): {type(e).__name__}: {e}", flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def sse_events(body):
    """The `data:` payloads of a server-sent event stream, in order."""
    return [line[len("data:"):].strip() for line in body.decode().splitlines() if line.startswith("data:")]


def generate_body(prompt, tokens, stream=False):
    return {"text": prompt, "sampling_params": {"max_new_tokens": tokens, "ignore_eos": True, "temperature": 0}, "stream": stream}


def check_routes(gw, model):
    g = gw.url
    s, b = call("POST", g + "/generate", generate_body("The capital of France is", 16), REQUEST_TIMEOUT_S)
    check(s == 200, f"/generate: {s} {b[:300]!r}")
    v = json.loads(b)
    check(isinstance(v.get("text"), str) and v["meta_info"]["completion_tokens"] == 16, f"/generate answer: {v}")

    s, b = call("POST", g + "/generate", generate_body("The capital of France is", 40, stream=True), REQUEST_TIMEOUT_S)
    ev = sse_events(b)
    check(s == 200 and ev and ev[-1] == "[DONE]", f"/generate stream: {s}, events {ev[-2:]}")
    chunks = [json.loads(e) for e in ev[:-1]]
    check(len(chunks) >= 2, f"/generate stream: {len(chunks)} events for 40 tokens in blocks of 32")
    check(all(chunks[i + 1]["text"].startswith(chunks[i]["text"]) for i in range(len(chunks) - 1)), "stream text is not cumulative")
    check(chunks[-1]["meta_info"]["completion_tokens"] == 40, f"last event: {chunks[-1]['meta_info']}")

    s, b = call("POST", g + "/v1/completions", {"model": model, "prompt": "Hello", "max_tokens": 8}, REQUEST_TIMEOUT_S)
    check(s == 200 and json.loads(b)["object"] == "text_completion", f"/v1/completions: {s} {b[:300]!r}")
    chat = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    s, b = call("POST", g + "/v1/chat/completions", chat, REQUEST_TIMEOUT_S)
    check(s == 200 and json.loads(b)["choices"][0]["message"]["role"] == "assistant", f"/v1/chat/completions: {s} {b[:300]!r}")
    s, b = call("POST", g + "/v1/chat/completions", {**chat, "stream": True}, REQUEST_TIMEOUT_S)
    ev = sse_events(b)
    check(s == 200 and ev[-1] == "[DONE]" and json.loads(ev[0])["object"] == "chat.completion.chunk", f"chat stream: {s} {ev[:2]}")
    # The Responses API: the gateway forwards it with its own defaults (priority among them).
    resp = {"model": model, "input": "Hi", "max_output_tokens": 8}
    s, b = call("POST", g + "/v1/responses", resp, REQUEST_TIMEOUT_S)
    check(s == 200 and json.loads(b)["output"][0]["role"] == "assistant", f"/v1/responses: {s} {b[:300]!r}")
    s, b = call("POST", g + "/v1/responses", {**resp, "stream": True}, REQUEST_TIMEOUT_S)
    ev = [json.loads(e) for e in sse_events(b)]
    check(s == 200 and ev and ev[0]["type"] == "response.created" and ev[-1]["type"].startswith("response."), f"responses stream: {s} {ev[:1]}")
    models = get_json(g + "/v1/models")
    check(model in [m["id"] for m in models["data"]], f"/v1/models: {models}")

    loads = get_json(g + "/get_loads")["workers"]
    check(len(loads) == 2 and all(w["load"] >= 0 for w in loads), f"gateway /get_loads (a -1 is a /get_load it could not read): {loads}")
    s, b = call("POST", g + "/flush_cache", timeout=10)
    check(s == 200 and json.loads(b).get("workers_flushed") == 2, f"gateway /flush_cache: {s} {b!r}")
    return "generate, generate stream, completions, chat, chat stream, responses, responses stream, models, get_loads, flush_cache"


def leave(gw, stream):
    """Send a long request, and hang up: a stream after its first event, a plain one after 1 s."""
    conn = http.client.HTTPConnection(HOST, gw.port, timeout=1.0)
    try:
        body = json.dumps(generate_body("Leaving:", 3000, stream))
        conn.request("POST", "/generate", body=body, headers={"Content-Type": "application/json"})
        if stream:
            r = conn.getresponse()
            check(r.status == 200 and r.readline().startswith(b"data:"), f"stream: {r.status}")
        else:
            try:
                r = conn.getresponse()
                raise AssertionError(f"a 3000-token request answered within 1 s ({r.status}); cannot test leaving")
            except TimeoutError:
                pass
    finally:
        conn.close()


def check_leave(gw, replicas):
    """Clients that give up: the gateway drops its call to the replica, which cancels the request."""
    count = lambda name: sum(r.metric(name) for r in replicas)
    cancelled0, finished0 = count("dllm:num_requests_cancelled_total"), count("dllm:num_requests_finished_total")
    leave(gw, stream=False)
    leave(gw, stream=True)

    def cancelled():
        return count("dllm:num_requests_cancelled_total") - cancelled0 >= 2 and count("dllm:num_running_reqs") == 0

    wait_until("both requests cancelled on the replicas", cancelled, 15)
    check(count("dllm:num_requests_finished_total") == finished0, "a request the client left ran to its end")
    return "a plain and a streaming request whose clients hung up were cancelled on their replicas"


def check_spread(gw, replicas):
    before = [r.metric("dllm:num_requests_total") for r in replicas]
    for i in range(8):
        s, b = call("POST", gw.url + "/generate", generate_body(f"Request {i}:", 4), REQUEST_TIMEOUT_S)
        check(s == 200, f"request {i}: {s} {b[:200]!r}")
    got = [r.metric("dllm:num_requests_total") - b0 for r, b0 in zip(replicas, before)]
    check(all(n > 0 for n in got) and sum(got) == 8, f"requests per replica: {got}")
    return f"8 requests -> {[int(n) for n in got]} per replica"


class Load:
    """Requests sent at once from threads; each records how it ended."""

    def __init__(self, url, n, tokens):
        self.results = [None] * n
        self.threads = [threading.Thread(target=self._one, args=(url, i, tokens), daemon=True) for i in range(n)]

    def _one(self, url, i, tokens):
        # Half of them stream (their answer has begun when the replica dies); in pairs, so that
        # round robin gives each replica both kinds.
        stream = (i // 2) % 2 == 1
        t0 = time.monotonic()
        try:
            s, b = call("POST", url + "/generate", generate_body(f"Load {i}:", tokens, stream), REQUEST_TIMEOUT_S)
            if stream:
                ok = s == 200 and sse_events(b)[-1:] == ["[DONE]"]
            else:
                ok = s == 200 and json.loads(b)["meta_info"]["completion_tokens"] == tokens
            how = "ok" if ok else f"failed ({s}{', stream cut' if stream and s == 200 else ''})"
        except TimeoutError:
            how = "hung"
        except http.client.IncompleteRead:
            how = "failed (stream cut)"
        except (OSError, http.client.HTTPException, ValueError) as e:
            # ValueError: a JSON body cut short.
            how = f"failed ({type(e).__name__})"
        except Exception as e:  # noqa: BLE001 -- recorded, so that it is not taken for a hang
            how = f"error ({type(e).__name__}: {e})"
        self.results[i] = (how, time.monotonic() - t0)

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        for t in self.threads:
            t.join(REQUEST_TIMEOUT_S + 10)
        return [r if r else ("hung", None) for r in self.results]


def in_flight(r):
    return get_json(r.url + "/get_load")[0]["num_reqs"]


def check_kill(gw, replicas):
    victim, survivor = replicas
    finished_before = survivor.metric("dllm:num_requests_finished_total")
    load = Load(gw.url, LOAD_REQUESTS, LOAD_TOKENS)
    load.start()
    # Everything sent and running on both: from here the victim's count can only fall.
    wait_until("the load in flight on both replicas", lambda: in_flight(victim) > 0 and in_flight(victim) + in_flight(survivor) == LOAD_REQUESTS, 30, 0.05)
    held = in_flight(victim)
    victim.kill()
    results = load.join()
    hows = [h for h, _ in results]
    failed = [h for h in hows if h != "ok"]
    check("hung" not in hows, f"requests hung: {hows}")
    check(len(failed) <= held, f"{len(failed)} requests failed but the killed replica held {held}: {hows}")
    done_on_survivor = survivor.metric("dllm:num_requests_finished_total") - finished_before
    check(done_on_survivor >= LOAD_REQUESTS - held, f"the survivor finished {done_on_survivor} of the {LOAD_REQUESTS - held} it held")

    # New requests: all to the survivor, all answered.
    before = survivor.metric("dllm:num_requests_total")
    for i in range(AFTER_KILL_REQUESTS):
        s, b = call("POST", gw.url + "/generate", generate_body(f"After {i}:", 8), REQUEST_TIMEOUT_S)
        check(s == 200, f"request {i} after the kill: {s} {b[:200]!r}")
    got = survivor.metric("dllm:num_requests_total") - before
    check(got >= AFTER_KILL_REQUESTS, f"the survivor saw {got} of {AFTER_KILL_REQUESTS} requests sent after the kill")
    longest = max(t for _, t in results)
    return (
        f"killed replica held {held} of {LOAD_REQUESTS}; {LOAD_REQUESTS - len(failed)} finished, {len(failed)} failed "
        f"({', '.join(sorted(set(failed))) or 'none'}), longest {longest:.1f} s; {AFTER_KILL_REQUESTS}/{AFTER_KILL_REQUESTS} after the kill ok"
    )


def check_restart(gw, replicas):
    victim = replicas[0]
    victim.start()
    gw.wait_healthy(2, 30)
    sent = 0

    def victim_serves():
        nonlocal sent
        s, b = call("POST", gw.url + "/generate", generate_body("Back?", 4), REQUEST_TIMEOUT_S)
        check(s == 200, f"request after the restart: {s} {b[:200]!r}")
        sent += 1
        return victim.metric("dllm:num_requests_total") > 0

    wait_until("the restarted replica serving again", victim_serves, 30, 0.1)
    return f"the restarted replica got a request within {sent} sent"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "dllm"))
    ap.add_argument("--deadline-s", type=float, default=300.0, help="the whole run's")
    ap.add_argument("--keep-logs", action="store_true", help="leave the temporary folder (model, logs)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="dllm-gateway-e2e-")
    # The whole run's bound: a stuck step must not keep the caller (cargo test, CI) waiting.
    watchdog = threading.Timer(a.deadline_s, lambda: (print(f"FAIL deadline: the run took over {a.deadline_s:.0f} s", flush=True), os._exit(3)))
    watchdog.daemon = True
    watchdog.start()
    model = os.path.join(work, "llada2-tiny")
    made = subprocess.run([a.binary, "make-model", "--out", model], capture_output=True, text=True, timeout=120)
    if made.returncode != 0:
        print(made.stdout, made.stderr)
        return 1
    serve = ["--model-path", model, "--device", "cpu", "--random-seed", "0"]
    replicas = [Replica(a.binary, free_port(), serve, os.path.join(work, f"replica-{i}.log")) for i in range(2)]
    # Round robin: the spread check can count on both replicas getting requests.
    gw = Gateway([r.url for r in replicas], free_port(), "round_robin", os.path.join(work, "gateway.log"), GATEWAY_FLAGS)
    checks = Checks()
    try:
        for r in replicas:
            r.start()
        gw.start()
        print(f"2 replicas ({', '.join(r.url for r in replicas)}) behind the gateway {gw.url}; logs in {work}", flush=True)
        checks.run("routes", lambda: check_routes(gw, "llada2-tiny"))
        checks.run("spread", lambda: check_spread(gw, replicas))
        checks.run("leave", lambda: check_leave(gw, replicas))
        checks.run("kill", lambda: check_kill(gw, replicas))
        checks.run("restart", lambda: check_restart(gw, replicas))
    finally:
        gw.stop()
        for r in replicas:
            r.stop()
    if checks.failed:
        print(f"logs kept in {work}")
        for name in sorted(os.listdir(work)):
            if name.endswith(".log"):
                with open(os.path.join(work, name), "rb") as f:
                    tail = f.read()[-3000:].decode(errors="replace")
                print(f"--- {name} (tail)\n{tail}")
    elif not a.keep_logs:
        shutil.rmtree(work, ignore_errors=True)
    print(f"gateway e2e: {checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
