#!/usr/bin/env bash
# Session 72 call1: issue 13's open lines on whichever card the call draws (H100 or H200), each
# against what the same call measures on that card. .carry: `bash tools/carry-ab.sh a850727` at
# 76d812b, so dllm-base is the build the issue was filed at (its "today's 3,108 tokens/s" on the
# H200). ~6 minutes.
#  1. `bench generate --requests 64 --tokens-per-step 2`, three interleaved rounds: a850727 ("issue")
#     against this build ("now"): the line asks for 2.5x the figure.
#  2. Greedy and sampled (temperature 0.7, top-p 0.9) steps at batch 1, 16, 64 and 128, two
#     interleaved rounds (batch 128 graphed, the default since f0486dd), each with its floor
#     measured in the same run.
set -uo pipefail
source tools/device-call.sh
timeout 170 bash tools/ab-ways.sh $R/generate 3 "issue:$C/dllm-base;now:$C/dllm" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
echo "generate: ${SECONDS}s"
S="--temperature 0.7 --top-p 0.9"
timeout $((420 - SECONDS)) bash tools/ab-ways.sh $R/ab 2 "greedy:$C/dllm;sampled:$C/dllm:$S" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
pack
echo "total: ${SECONDS}s"
