#!/usr/bin/env bash
# Session 33, call 9: every kernel against its ceiling on the current code (b94e2ca's build):
# `bench kernels` at batch 1, 16, 64 and 128 (prefix 1024), batch 1 at 32k, and the sampler.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
M="--preset mini --device cuda --block 32"
for b in 1 16 64 128; do timeout 90 $C/dllm bench kernels $M --prefix 1024 --batch $b > $R/k-b$b.txt 2>&1; done
timeout 90 $C/dllm bench kernels $M --prefix 32736 --batch 1 > $R/k-b1-32k.txt 2>&1
timeout 90 $C/dllm bench kernels $M --prefix 1024 --batch 64 --temperature 0.7 --top-p 0.9 > $R/k-b64-sampled.txt 2>&1
for f in $R/k-*.txt; do echo "== $f"; head -50 $f | cut -c1-150; done
cd $OUT && tar czf r.tgz r
