#!/usr/bin/env bash
# Session 68 call8: call7 on an H200 only, without the tests (call7 ran them on an H100), in the
# device time left: greedy against sampled on f0486dd's default at batch 16, 64 and 128, two
# rounds, then the ncu of the expert tiles. On any other card it stops at once.
set -uo pipefail
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: nothing to do"; exit 0; }
source tools/device-call.sh
W="greedy:$C/dllm;sampled:$C/dllm:--temperature 0.7 --top-p 0.9"
timeout 100 bash tools/ab-ways.sh $R/ab 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 16,64,128
pack
bash tools/ncu-expert-tiles.sh $R $C/dllm $((SECONDS + 60)) 80
pack
echo "total: ${SECONDS}s"
