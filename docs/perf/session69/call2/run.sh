#!/usr/bin/env bash
# Session 69 call2, on an H200 only (it stops at once elsewhere): the H200's lines on 9c77d81's
# build (the same .carry as call1, which passed the CUDA suite and fixtures on an H100).
#  1. Steps at batch 1, 16, 64 and 128 on the default (batch 128 graphed since f0486dd), greedy
#     and sampled (temperature 0.7, top-p 0.9), two interleaved rounds.
#  2. `bench generate`, 64 requests, 2 tokens a step, twice.
#  3. With the time left: the ncu of the expert tiles (never yet run on an H200).
set -uo pipefail
source tools/device-call.sh
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: the lines are the H200's"; exit 0; }
W="greedy:$C/dllm;sampled:$C/dllm:--temperature 0.7 --top-p 0.9"
timeout 240 bash tools/ab-ways.sh $R/lines 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
pack
echo "lines: ${SECONDS}s"
timeout 150 bash tools/ab-ways.sh $R/generate 2 "now:$C/dllm" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
echo "generate: ${SECONDS}s"
[ $SECONDS -lt 420 ] && bash tools/ncu-expert-tiles.sh $R $C/dllm $((500 - SECONDS)) 70  # its own clock
pack
echo "total: ${SECONDS}s"
