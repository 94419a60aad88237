#!/usr/bin/env bash
# Session 69 call1: session 68's call10 (prepared, not run there) at 9c77d81, reordered so the
# H200's lines come before the serving runs, with the whole CUDA suite as its gate (a626f0b,
# 1484897 and 9c77d81 had not run on a GPU). .carry: `bash tools/gpu-test.sh`, then
# `strip --strip-all .carry/dllm && gzip -f .carry/*`.
#  1. The CUDA suite (its graph test now checks the replay count) and the fixtures.
#  2. On an H200: the lines at batch 1, 16, 64 and 128 on the default (batch 128 graphed since
#     f0486dd), sampled against greedy at 16, 64 and 128.
#  3. A served workload's share of graph-replayed steps from /metrics (tools/serve_load.py): 128
#     staggered clients at --max-running-requests 128 (graphs to 128, then to 64), 32 at the
#     server's defaults.
#  4. On an H200, while time is left: the ncu of the expert tiles.
set -uo pipefail
source tools/device-call.sh
tests_gate
pack
H200=0; nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 && H200=1
if [ $H200 = 1 ]; then
    timeout 90 $C/dllm bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128 \
        --json $R/step-lines.json > $R/step-lines.txt 2>&1
    grep -E '^ +[0-9]+ (random|mask) ' $R/step-lines.txt
    W="greedy:$C/dllm;sampled:$C/dllm:--temperature 0.7 --top-p 0.9"
    timeout 100 bash tools/ab-ways.sh $R/ab 1 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 16,64,128
    pack
    echo "lines: ${SECONDS}s"
fi
M=/tmp/mini-config
rm -rf $M && $C/dllm make-model --preset mini --config-only --out $M 2>&1 | tail -1
serve_once() {  # name, serve_load.py's clients, then dllm serve's extra options
    local name=$1 clients=$2; shift 2
    $C/dllm serve --model-path $M --load-format dummy --device cuda --host 127.0.0.1 --port 8188 "$@" \
        > $R/serve-$name.log 2>&1 &
    local pid=$!
    for _ in $(seq 120); do curl -sf http://127.0.0.1:8188/health >/dev/null && break; sleep 1; done
    echo "== $name ($*) server up at ${SECONDS}s"
    timeout 100 python3 tools/serve_load.py --url http://127.0.0.1:8188 --clients $clients --warmup 15 --duration 30 \
        --temperature 0.7 --top-p 0.9 | tee $R/load-$name.json
    kill $pid; wait $pid 2>/dev/null
    pack
}
serve_once c128-g128 128 --max-running-requests 128
serve_once c128-g64 128 --max-running-requests 128 --cuda-graph-max-bs 64
serve_once c32-default 32
echo "serving: ${SECONDS}s"
if [ $H200 = 1 ] && [ $SECONDS -lt 420 ]; then
    bash tools/ncu-expert-tiles.sh $R $C/dllm $((540 - SECONDS - 60)) 60  # its own clock
    pack
fi
echo "total: ${SECONDS}s"
