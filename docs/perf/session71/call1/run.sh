#!/usr/bin/env bash
# Session 71 call1: session 70's call2 again (it stopped on an H100), the H200's lines on the kept
# sampler (clusters of 2 CTAs a row; session 70's call1 ran the suite, the fixtures and the
# sampler's memcheck on the same kernel code, on an H100). .carry: `bash tools/carry-ab.sh
# 9c77d81` at 2ed5eb9 (dllm; 9c77d81's as dllm-base, clusters of 4). ~7 minutes.
#  On an H200:
#  1. Steps at batch 1, 16, 64 and 128, two interleaved rounds: greedy, sampled (temperature 0.7,
#     top-p 0.9) and sampled on the base. Batch 128 graphed (the default since f0486dd).
#  2. `bench generate` (64 requests, 2 tokens a step).
#  3. The ncu of the expert tiles with the time left (never yet run on an H200).
#  On any other card (the tool mostly lends H100s, and the lines are the H200's): this build's
#  CUDA suite, fixtures and server smoke (tools/gpu_server_smoke.py: logprobs, bias, penalties, n,
#  stop_regex, the chat template) instead, so the draw is not spent on nothing.
set -uo pipefail
source tools/device-call.sh
if ! nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    echo "not an H200: the suite, the fixtures and the server smoke"
    bash tools/device-suite.sh "$R/suite"
    pack
    timeout $((540 - SECONDS)) python3 tools/gpu_server_smoke.py $C/dllm > "$R/server-smoke.txt" 2>&1
    echo "server smoke rc=$? (${SECONDS}s)"
    tail -n 15 "$R/server-smoke.txt"
    pack
    exit 0
fi
S="--temperature 0.7 --top-p 0.9"
W="greedy:$C/dllm;sampled:$C/dllm:$S;sampled-base:$C/dllm-base:$S"
timeout $((300 - SECONDS)) bash tools/ab-ways.sh $R/ab 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
pack
echo "steps: ${SECONDS}s"
timeout $((420 - SECONDS)) bash tools/ab-ways.sh $R/generate 1 "now:$C/dllm" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
echo "generate: ${SECONDS}s"
[ $SECONDS -lt 440 ] && bash tools/ncu-expert-tiles.sh $R $C/dllm $((500 - SECONDS - 40)) 40  # its own clock
pack
echo "total: ${SECONDS}s"
