#!/usr/bin/env bash
# Session 58's fourth call: the idle line as landed (the span starts at the step's first work on
# the stream: its inputs' copy). `.carry` from tools/gpu-test.sh at the working tree (the idle
# line on 4134a8e), test binaries gzipped, plus call1's `dllm-base` (bbfd34f).
# 1. the CUDA suite and the fixtures (tools/device-suite.sh); 2. steps at batch 1, 16, 64 and
# 128, base and new, two rounds; 3. `bench generate`, new.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/device-suite.sh $R
pack
W="base:$C/dllm-base;new:$C/dllm"
bash tools/ab-ways.sh $R 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
grep -h "device idle\|host time" $R/w-new-*.txt
pack
bash tools/ab-ways.sh $R 1 "new:$C/dllm" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
echo "total: ${SECONDS}s"
