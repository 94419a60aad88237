#!/usr/bin/env bash
# Session 72 call4: calls 1-3's measurements on an H200, the card issue 13's lines name. H200
# only: on any other card it stops at once (calls 1-3 ran them on an H100). .carry as call1's
# (`bash tools/carry-ab.sh a850727` at 76d812b). ~2.5 minutes.
#  1. `bench generate --requests 64 --tokens-per-step 2`, two interleaved rounds: a850727, this
#     build with the routers as drawn (the routing) and balanced (the default).
#  2. Greedy and sampled (temperature 0.7, top-p 0.9) steps at batch 1, 16, 64 and 128, two
#     interleaved rounds (batch 128 graphed, the default since f0486dd).
set -uo pipefail
source tools/device-call.sh
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: nothing run"; exit 3; }
W="issue:$C/dllm-base;now-drawn:$C/dllm:--balanced-router false;now:$C/dllm"
timeout 200 bash tools/ab-ways.sh $R/generate 2 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
echo "generate: ${SECONDS}s"
S="--temperature 0.7 --top-p 0.9"
timeout $((420 - SECONDS)) bash tools/ab-ways.sh $R/ab 2 "greedy:$C/dllm;sampled:$C/dllm:$S" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
pack
echo "total: ${SECONDS}s"
