#!/usr/bin/env bash
# Session 71 call4: the two open step lines and generate alone, to fit the ~400 s of device time
# left (calls 2 and 3 drew H100s and stopped). H200 only: on any other card it stops at once.
# .carry as call1's (`bash tools/carry-ab.sh 9c77d81` at 2ed5eb9). ~4 minutes.
#  1. Greedy and sampled (temperature 0.7, top-p 0.9) steps at batch 64 and 128, two interleaved
#     rounds (batch 128 graphed, the default since f0486dd).
#  2. `bench generate` (64 requests, 2 tokens a step) once.
set -uo pipefail
source tools/device-call.sh
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: nothing run"; exit 3; }
S="--temperature 0.7 --top-p 0.9"
timeout 130 bash tools/ab-ways.sh $R/ab 2 "greedy:$C/dllm;sampled:$C/dllm:$S" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 64,128
pack
echo "steps: ${SECONDS}s"
timeout $((250 - SECONDS)) bash tools/ab-ways.sh $R/generate 1 "now:$C/dllm" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
echo "total: ${SECONDS}s"
