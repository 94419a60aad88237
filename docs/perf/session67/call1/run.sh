#!/usr/bin/env bash
# Session 67 call1. .carry/dllm-base is 267b7e8's build (tools/gpu-test.sh); src/ and csrc/ are as
# at 46b1e2c.
# 1. Sampled (temperature 0.7, top-p 0.9) against greedy steps at batch 16 and 64, two
#    interleaved rounds, on any card: the line (within 5% of greedy) was last measured in session
#    38, before greedy steps took lm_head_pick (session 59: ~0.4 ms faster at batch 64 on an
#    H100), which sampled steps do not.
# 2. On an H200 only: session 65 call1's ncu (docs/perf/session65/call1/run.sh; session 66 ran it
#    on an H100 as its call2) of one launch each of the timed steps' expert tiles at batch 64 and
#    128: does the L2 reach its peak before DRAM on this card, as the H100's figures (L2 87-90%,
#    DRAM 79-85%) and the H200's 1.4x DRAM bandwidth behind the same L2 suggest?
# 3. With the time left (the call must fit ~180 s of device time): `bench generate`, then steps at batch 128, once each.
set -uo pipefail
source tools/device-call.sh
W="greedy:$C/dllm-base;sampled:$C/dllm-base:--temperature 0.7 --top-p 0.9"
timeout 150 bash tools/ab-ways.sh $R/sampled 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 16,64
pack
# The ncu, with a time guard that leaves room for the rest: batch 64's two tiles first.
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 && bash tools/ncu-expert-tiles.sh $R $C/dllm-base $((90 - SECONDS)) 120
pack
W="now:$C/dllm-base"
timeout $((175 - SECONDS)) bash tools/ab-ways.sh $R/generate 1 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
timeout $((180 - SECONDS)) bash tools/ab-ways.sh $R/lines 1 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 128
pack
echo "total: ${SECONDS}s"
