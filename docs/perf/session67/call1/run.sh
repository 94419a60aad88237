#!/usr/bin/env bash
# Session 67 call1 (session 66's call3, carried forward): on an H200 only.
# 1. Session 65 call1's ncu (docs/perf/session65/call1/run.sh; session 66 ran it on an H100 as
#    its call2) of one launch each of the timed steps' expert tiles at batch 64 and 128: does the
#    L2 reach its peak before DRAM does on this card, as the H100's figures (L2 87-90%, DRAM
#    79-85%) and the H200's 1.4x DRAM bandwidth behind the same L2 suggest?
# 2. With the time left: the lines on this machine, one round (steps at batch 64 and 128,
#    `bench generate`), for the standing figures' spread across H200s.
# .carry/dllm-base is 267b7e8's build (tools/gpu-test.sh); src/ and csrc/ are as at 46b1e2c.
set -uo pipefail
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: nothing to do"; exit 0; }
source tools/device-call.sh
bash docs/perf/session65/call1/run.sh
W="now:$C/dllm-base"
timeout $((500 - SECONDS)) bash tools/ab-ways.sh $R/lines 1 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 64,128
pack
timeout $((590 - SECONDS)) bash tools/ab-ways.sh $R/generate 1 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
echo "total: ${SECONDS}s"
