#!/usr/bin/env bash
# Session 68 call7: f0486dd's build (graphs to 128 requests by default): the CUDA suite and the
# fixtures first, then greedy against sampled (temperature 0.7, top-p 0.9) at batch 16, 64 and 128
# on the new default, two interleaved rounds; then, on an H200 only, the ncu of the expert tiles.
set -uo pipefail
source tools/device-call.sh
tests_gate
W="greedy:$C/dllm;sampled:$C/dllm:--temperature 0.7 --top-p 0.9"
timeout 150 bash tools/ab-ways.sh $R/ab 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 16,64,128
pack
echo "a/b: ${SECONDS}s"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    bash tools/ncu-expert-tiles.sh $R $C/dllm $((SECONDS + 150)) 110
fi
pack
echo "total: ${SECONDS}s"
