#!/usr/bin/env bash
# Session 68 call10, prepared for the next session (not run: this session's device time was spent).
# .carry: `bash tools/gpu-test.sh` at this commit's tree, then `strip --strip-all .carry/dllm &&
# gzip -f .carry/*` (dllm and the two test binaries, ~15 MB). ~6 minutes. Any card; the lines and
# the ncu count only on an H200.
#  1. The graph test (its new replay-count check) and the fixtures.
#  2. A served workload's share of graph-replayed steps, which call6 and call9 could only infer:
#     tools/serve_load.py now reads dllm:cuda_graph_replays_total over its window. 128 staggered
#     clients at --max-running-requests 128 (graphs to 128, the default now, then to 64), and 32
#     at the server's defaults.
#  3. On an H200: the lines at batch 1, 16, 64 and 128 on the new default (batch 128 graphed),
#     sampled against greedy at 16, 64 and 128, then the ncu of the expert tiles.
set -uo pipefail
source tools/device-call.sh
tests_gate cuda_graph_replay_equals_eager
M=/tmp/mini-config
rm -rf $M && $C/dllm make-model --preset mini --config-only --out $M 2>&1 | tail -1
serve_once() {  # name, then dllm serve's extra options; serve_load.py's clients last
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
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: the lines are the H200's"; exit 0; }
timeout 90 $C/dllm bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128 \
    --json $R/step-lines.json > $R/step-lines.txt 2>&1
grep -E '^ +[0-9]+ (random|mask) ' $R/step-lines.txt
W="greedy:$C/dllm;sampled:$C/dllm:--temperature 0.7 --top-p 0.9"
timeout 100 bash tools/ab-ways.sh $R/ab 1 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 16,64,128
pack
bash tools/ncu-expert-tiles.sh $R $C/dllm 100 100  # its own clock: launches start in its first 100 s
pack
echo "total: ${SECONDS}s"
