#!/usr/bin/env bash
# Session 71 call3: call2 without its ncu part, to fit the device time left (call2 drew an H100
# and stopped). H200 only: on any other card it stops at once. .carry as
# call1's (`bash tools/carry-ab.sh 9c77d81` at 2ed5eb9). ~6 minutes.
#  1. Steps at batch 1, 16, 64 and 128, two interleaved rounds: greedy, sampled (temperature 0.7,
#     top-p 0.9) and sampled on the base (9c77d81, clusters of 4 CTAs a row). Batch 128 graphed.
#  2. `bench generate` (64 requests, 2 tokens a step).
set -uo pipefail
source tools/device-call.sh
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: nothing run"; exit 3; }
S="--temperature 0.7 --top-p 0.9"
W="greedy:$C/dllm;sampled:$C/dllm:$S;sampled-base:$C/dllm-base:$S"
timeout $((300 - SECONDS)) bash tools/ab-ways.sh $R/ab 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
pack
echo "steps: ${SECONDS}s"
timeout $((420 - SECONDS)) bash tools/ab-ways.sh $R/generate 1 "now:$C/dllm" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
echo "generate: ${SECONDS}s"
echo "total: ${SECONDS}s"
