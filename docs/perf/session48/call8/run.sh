#!/usr/bin/env bash
# Session 48's eighth call, prepared and NOT run: `status` offered an H200 with 274 s of device
# time left, too little to start one. For the next H200: `.carry` from `bash tools/gpu-test.sh` at
# HEAD, plus `bash tools/kernel-trace/build.sh`. The lines on the default (first on an H200 since
# the warp-specialized tiles took 64-row items, session 47); then the baseline at batch 1 with its
# prompt-cache prefix and ours against it, the one speedup the H200 has not shown; then call7's
# prefill timeline on the same machine (~5 minutes in all).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
timeout 75 $C/dllm bench step $M --batch 1,4,16,64,128 --json $R/step-mini.json > $R/step-mini.txt 2>&1
grep "^ *[0-9]\|rror\|device:" $R/step-mini.txt | cut -c1-160
echo "steps: ${SECONDS}s"
pack
timeout 90 python3 tools/baseline_torch.py --preset mini --batch 1 --prefix 1024 --block 32 \
    --warmup 10 --iters 50 --variants triton --mask-frac 0 \
    --json "$R/baseline-b1.json" > "$R/baseline-b1.log" 2>&1
echo "baseline rc=$? ${SECONDS}s"; grep "balanced\|prefilled\|triton:" "$R/baseline-b1.log" | cut -c1-200
pack
timeout 40 $C/dllm bench step $M --batch 1 --baseline "$R/baseline-b1.json" > "$R/step-b1-vs.txt" 2>&1
grep "^ *[0-9]\|rror" $R/step-b1-vs.txt | cut -c1-160
echo "total: ${SECONDS}s"
pack
bash docs/perf/session48/call7/run.sh
