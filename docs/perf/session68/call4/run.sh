#!/usr/bin/env bash
# Session 68 call4: call2 on an H200 only (calls 1-3 drew H100s): greedy against sampled, eager
# and graphed to 256, two rounds at batch 16, 64 and 128, then the ncu of the expert tiles. On
# any other card it stops at once.
set -uo pipefail
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: nothing to do"; exit 0; }
bash docs/perf/session68/call2/run.sh
