#!/usr/bin/env bash
# Session 68 call2: call1 (an H100) had batch 128 2.0-2.3% faster with graphs to 256 requests
# (session 52: 0.5-0.8%) and sampled steps 6.6% over greedy at batch 128 (eager there; the line
# was only ever measured at 16 and 64). Two interleaved rounds of greedy and sampled (temperature
# 0.7, top-p 0.9), each eager past batch 64 (the default) and graphed to 256, at batch 16, 64 and
# 128; then, on an H200 only, the ncu of the timed steps' expert tiles. .carry/dllm as call1's.
set -uo pipefail
source tools/device-call.sh
S="--temperature 0.7 --top-p 0.9"
W="greedy:$C/dllm;greedy-g256:$C/dllm:--cuda-graph-max-bs 256;sampled:$C/dllm:$S;sampled-g256:$C/dllm:$S --cuda-graph-max-bs 256"
timeout 200 bash tools/ab-ways.sh $R/ab 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 16,64,128
pack
echo "a/b: ${SECONDS}s"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    bash tools/ncu-expert-tiles.sh $R $C/dllm $((SECONDS + 200)) 110
fi
pack
echo "total: ${SECONDS}s"
