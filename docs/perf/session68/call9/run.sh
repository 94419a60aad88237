#!/usr/bin/env bash
# Session 68 call9 (run as a one-line command on call8's warm H100, kept here as run): do CUDA
# graphs pay in a server at its defaults under staggered traffic? f0486dd's `dllm serve` on mini's
# shapes with random weights (--max-running-requests 32, its default), graphs on (the default) and
# off (--disable-cuda-graph), against tools/serve_load.py with 32 clients, sampled (temperature
# 0.7, top-p 0.9), a 10 s warm-up and a 30 s window.
source tools/device-call.sh >/dev/null 2>&1
M=/tmp/mini-config
rm -rf $M; $C/dllm make-model --preset mini --config-only --out $M >/dev/null 2>&1
for g in on off; do
    f=$([ $g = off ] && echo --disable-cuda-graph)
    $C/dllm serve --model-path $M --load-format dummy --device cuda --port 8188 $f > $R/serve-$g.log 2>&1 &
    p=$!
    for _ in $(seq 120); do curl -sf http://127.0.0.1:8188/health >/dev/null && break; sleep 1; done
    echo "== graphs $g"
    timeout 90 python3 tools/serve_load.py --clients 32 --warmup 10 --duration 30 --temperature 0.7 --top-p 0.9 | tee $R/load-$g.json
    kill $p; wait $p 2>/dev/null
done
pack
