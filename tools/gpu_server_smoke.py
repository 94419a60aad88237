#!/usr/bin/env python3
"""The server's request features on the CUDA backend (the tests in tests/ run them on the CPU).

Runs on the GPU machine from tools/gpu-test-device.sh (stdlib only, loopback only): starts
`dllm serve --device cuda` on the embedded tiny model, then checks that
  - greedy requests give the same tokens and logprobs through the fused GPU pick and through
    the host-logits path (a neutral repetition penalty of 1 keeps the fused pick; a logit_bias
    of 0 on one token forces the host path without changing the logits),
  - each logprob is <= 0 and one per output token,
  - logit_bias +100 on a token makes greedy output it everywhere,
  - n = 3 returns 3 samples, each replaying alone with seed + j,
  - stop_regex ends a request with the pattern as `matched`,
  - /v1/chat/completions renders the checkpoint's template (equal to /generate on its text).
Prints one line per check and exits non-zero on the first failure.
"""
import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else ".carry/dllm"


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{url}: HTTP {e.code}: {e.read().decode(errors='replace')}")


def main():
    srv = subprocess.Popen([BIN, "serve", "--device", "cuda", "--port", "0", "--mem-fraction-static", "0.05"],
                           stderr=subprocess.PIPE, text=True)
    base = None
    t0 = time.time()
    while time.time() - t0 < 120:
        line = srv.stderr.readline()
        if not line:
            break
        sys.stderr.write(line)
        if "on http://" in line:
            base = line.strip().split("on ")[-1]
            break
    if base is None:
        srv.kill()
        sys.exit("the server did not start")
    failures = 0

    def check(name, ok, detail=""):
        nonlocal failures
        print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")
        failures += 0 if ok else 1

    try:
        gen = base + "/generate"
        text = "<role>HUMAN</role>Why did Camus say that Sisyphus was happy?<|role_end|><role>ASSISTANT</role>"
        sp = {"temperature": 0, "max_new_tokens": 64, "ignore_eos": True}
        fused = post(gen, {"text": text, "sampling_params": sp, "return_logprob": True})
        host = post(gen, {"text": text, "sampling_params": {**sp, "logit_bias": {"0": 0.0}}, "return_logprob": True})
        lf = [x[0] for x in fused["meta_info"]["output_token_logprobs"]]
        lh = [x[0] for x in host["meta_info"]["output_token_logprobs"]]
        check("fused pick == host-logits path (tokens)", fused["output_ids"] == host["output_ids"])
        diff = max(abs(a - b) for a, b in zip(lf, lh)) if lf and lh else float("nan")
        check("fused pick == host-logits path (logprobs, max |diff| < 1e-3)", len(lf) == len(lh) and diff < 1e-3, f"max diff {diff:.2e}")
        check("one logprob per token, all <= 0", len(lf) == len(fused["output_ids"]) and all(x <= 1e-6 for x in lf))

        tok = fused["output_ids"][0]
        other = (tok + 7) % 200 + 10
        biased = post(gen, {"text": text, "sampling_params": {**sp, "max_new_tokens": 32, "logit_bias": {str(other): 100.0}}})
        check("logit_bias +100 forces the token", set(biased["output_ids"]) == {other}, f"token {other}")

        pen = post(gen, {"text": text, "sampling_params": {**sp, "repetition_penalty": 2.0, "frequency_penalty": 1.5}})
        check("penalties change the greedy output", pen["output_ids"] != fused["output_ids"])

        samp = {"temperature": 1.0, "max_new_tokens": 32, "seed": 11, "n": 3}
        many = post(gen, {"text": text, "sampling_params": samp})
        alone = [post(gen, {"text": text, "sampling_params": {**samp, "n": 1, "seed": 11 + j}}) for j in range(3)]
        check("n = 3 gives 3 samples replaying with seed + j",
              isinstance(many, list) and len(many) == 3 and all(m["output_ids"] == a["output_ids"] for m, a in zip(many, alone)))

        # A pattern certain to match the first generated character.
        rx = post(gen, {"text": text, "sampling_params": {**sp, "stop_regex": ["(?s)."]}})
        fr = rx["meta_info"]["finish_reason"]
        check("stop_regex ends the request", fr.get("type") == "stop" and fr.get("matched") == "(?s).", json.dumps(fr))

        msgs = [{"role": "user", "content": "Why?"}]
        chat = post(base + "/v1/chat/completions", {"messages": msgs, "max_tokens": 16, "temperature": 0})
        native = post(gen, {"text": "<role>HUMAN</role>Why?<|role_end|><role>ASSISTANT</role>",
                            "sampling_params": {"temperature": 0, "max_new_tokens": 16}})
        check("chat renders the checkpoint's template", chat["choices"][0]["message"]["content"] == native["text"])
        check("logprobs are finite", all(math.isfinite(x) for x in lf))
    finally:
        srv.terminate()
        srv.wait(timeout=30)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
