#!/usr/bin/env bash
# Session 69 call4, prepared for the next session (not run in session 69: no machine could be
# started), any card. d12ce36, the sampler's clusters of 2 CTAs a row. .carry: `bash
# tools/carry-ab.sh 9c77d81` at d12ce36 or a later commit whose src/ and csrc/ differ from it in
# comments only (dllm, and 9c77d81's as dllm-base: clusters of 4). ~9 minutes.
#  1. The whole CUDA suite and the fixtures; memcheck of the sampler's CPU-twin test.
#  2. Steps at batch 1, 16, 64 and 128, two interleaved rounds: greedy, sampled (temperature 0.7,
#     top-p 0.9), and sampled on the base. On an H200 the greedy and sampled rows are the lines
#     (batch 128 graphed by default since f0486dd, never yet measured on an H200).
#  3. On an H200: `bench generate` (64 requests, 2 tokens a step), then the ncu of the expert
#     tiles with the time left.
set -uo pipefail
source tools/device-call.sh
tests_gate
bash tools/memcheck-tests.sh $R sample_kernel_matches_sample_row_u
pack
echo "tests: ${SECONDS}s"
S="--temperature 0.7 --top-p 0.9"
W="greedy:$C/dllm;sampled:$C/dllm:$S;sampled-base:$C/dllm-base:$S"
timeout $((420 - SECONDS)) bash tools/ab-ways.sh $R/ab 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
pack
echo "steps: ${SECONDS}s"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 && [ $SECONDS -lt 440 ]; then
    timeout $((520 - SECONDS)) bash tools/ab-ways.sh $R/generate 1 "now:$C/dllm" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
    pack
    [ $SECONDS -lt 480 ] && bash tools/ncu-expert-tiles.sh $R $C/dllm $((560 - SECONDS - 40)) 40  # its own clock
    pack
fi
echo "total: ${SECONDS}s"
