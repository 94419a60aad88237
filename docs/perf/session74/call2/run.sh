#!/usr/bin/env bash
# Session 74 call2: session 72 call4's measurements on an H200, the card issue 13's lines name,
# with the live-rows build (branch s73-live-rows, `.carry/dllm`) as "now" when call1 passed its
# tests, else main's code (`.carry/dllm-base`, 7051d62): pass the binary's name (dllm or
# dllm-base). H200 only: on any other card it stops at once. .carry: call1's plus a850727's
# release binary, stripped and gzipped as .carry/dllm-a850727.gz (the build: its 3,108
# tokens/s). ~7 minutes.
#  1. `bench generate --requests 64 --tokens-per-step 2`, two interleaved rounds: a850727, now with
#     the routers as drawn (the routing) and balanced (the default).
#  2. Greedy and sampled (temperature 0.7, top-p 0.9) steps at batch 1, 16, 64 and 128, two
#     interleaved rounds (batch 128 graphed, the default since f0486dd).
set -uo pipefail
source tools/device-call.sh
NOW=$C/${1:-dllm}
echo "now: $NOW"
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: nothing run"; exit 3; }
W="issue:$C/dllm-a850727;now-drawn:$NOW:--balanced-router false;now:$NOW"
timeout 260 bash tools/ab-ways.sh $R/generate 2 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
echo "generate: ${SECONDS}s"
S="--temperature 0.7 --top-p 0.9"
timeout $((560 - SECONDS)) bash tools/ab-ways.sh $R/ab 2 "greedy:$NOW;sampled:$NOW:$S" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
pack
echo "total: ${SECONDS}s"
