#!/usr/bin/env bash
# Session 68 call6: whether CUDA graphs of 65-128 requests pay in a server under staggered traffic
# (calls 1-3 measured them in lockstep benchmarks only). `dllm serve` on mini's shapes with random
# weights (--load-format dummy), --max-running-requests 128, against tools/serve_load.py with 128
# clients whose requests (prompts of 256-1,024 random ids, 64-256 new tokens) start spread over a
# 15 s warm-up; tokens/s of the requests that finish in the next 30 s. Greedy, then sampled
# (temperature 0.7, top-p 0.9), each with --cuda-graph-max-bs 64 (the default) and 128 (sampled in the other order).
set -uo pipefail
source tools/device-call.sh
M=/tmp/mini-config
rm -rf $M && $C/dllm make-model --preset mini --config-only --out $M 2>&1 | tail -1
serve_once() {  # name, graph max bs, then serve_load.py's options
    local name=$1 bs=$2; shift 2
    $C/dllm serve --model-path $M --load-format dummy --device cuda --host 127.0.0.1 --port 8188 \
        --max-running-requests 128 --cuda-graph-max-bs $bs > $R/serve-$name.log 2>&1 &
    local pid=$!
    for _ in $(seq 120); do curl -sf http://127.0.0.1:8188/health >/dev/null && break; sleep 1; done
    echo "== $name (graphs to $bs) server up at ${SECONDS}s"
    timeout 120 python3 tools/serve_load.py --url http://127.0.0.1:8188 --clients 128 --warmup 15 --duration 30 "$@" \
        | tee $R/load-$name.json
    kill $pid; wait $pid 2>/dev/null
    grep -iE "error|panic|warn" $R/serve-$name.log | head -3
    pack
}
serve_once greedy-64 64
serve_once greedy-128 128
serve_once sampled-128 128 --temperature 0.7 --top-p 0.9
serve_once sampled-64 64 --temperature 0.7 --top-p 0.9
echo "total: ${SECONDS}s"
