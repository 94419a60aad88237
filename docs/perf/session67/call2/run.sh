#!/usr/bin/env bash
# Session 67 call2: call1 drew an H100; on an H200 only (the lines' card), in the ~150 s of device
# time left: sampled (temperature 0.7, top-p 0.9) against greedy steps at batch 16 and 64, one
# round each, then the ncu of call1's step 2 (session 65 call1's launches: the timed steps'
# expert tiles), batch 64's two first. .carry/dllm-base is 267b7e8's build.
set -uo pipefail
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: nothing to do"; exit 0; }
source tools/device-call.sh
W="greedy:$C/dllm-base;sampled:$C/dllm-base:--temperature 0.7 --top-p 0.9"
timeout 50 bash tools/ab-ways.sh $R/sampled 1 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 16,64
pack
bash tools/ncu-expert-tiles.sh $R $C/dllm-base $((100 - SECONDS)) $((140 - SECONDS))
pack
echo "total: ${SECONDS}s"
