#!/usr/bin/env bash
# Session 72 call6: call4 cut to what the ~300 s of device time left holds. H200 only: on any
# other card it stops at once. .carry as call1's (`bash tools/carry-ab.sh a850727` at 76d812b).
#  1. `bench generate --requests 64 --tokens-per-step 2`, one round: a850727, this build as drawn
#     and balanced.
#  2. Greedy steps at batch 64 and 128, one run.
set -uo pipefail
source tools/device-call.sh
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: nothing run"; exit 3; }
W="issue:$C/dllm-base;now-drawn:$C/dllm:--balanced-router false;now:$C/dllm"
timeout 60 bash tools/ab-ways.sh $R/generate 1 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
timeout $((150 - SECONDS)) bash tools/ab-ways.sh $R/ab 1 "greedy:$C/dllm" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 64,128
pack
echo "total: ${SECONDS}s"
