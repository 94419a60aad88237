#!/usr/bin/env bash
# Session 52's fourth call: combine_bench.cu (built here: see its header; the binary rides in .carry).
set -uo pipefail
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for i in 1 2; do ./.carry/combine_bench; done 2>&1 | tee $OUT/combine_bench.txt
