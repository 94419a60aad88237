#!/usr/bin/env bash
# Session 72 call2: `bench generate` with the routers as the issue's build drew them, and on an
# H200 the step lines too. .carry as call1's (`bash tools/carry-ab.sh a850727` at 76d812b).
#  1. `bench generate --requests 64 --tokens-per-step 2`, two interleaved rounds: a850727
#     ("issue", routers as drawn: it has no balancing), this build as drawn ("now-drawn",
#     `--balanced-router false`: the issue's routing) and balanced ("now", the default). ~1 min.
#  2. H200 only: call1's steps (greedy and sampled at batch 1, 16, 64 and 128, two rounds). ~1 min.
set -uo pipefail
source tools/device-call.sh
W="issue:$C/dllm-base;now-drawn:$C/dllm:--balanced-router false;now:$C/dllm"
timeout 200 bash tools/ab-ways.sh $R/generate 2 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
echo "generate: ${SECONDS}s"
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: no steps"; exit 0; }
S="--temperature 0.7 --top-p 0.9"
timeout $((420 - SECONDS)) bash tools/ab-ways.sh $R/ab 2 "greedy:$C/dllm;sampled:$C/dllm:$S" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
pack
echo "total: ${SECONDS}s"
