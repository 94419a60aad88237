#!/usr/bin/env bash
# Session 47's eighth call, for the H200 with what device time was left (~4 min): the
# baseline with its prefix prefilled from random prompts at batch 1 (call6 ran it on the H100),
# ours against it, then ours at batch 1-128 on the new default against session 46's balanced
# baseline (its batch 4-128 rows route within 2.4% of ours). .carry as call6's.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry; D=docs/perf/session46
source tools/device-env.sh "$R" > /dev/null
pack() { (cd $OUT && tar czf r.tgz r); }
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
SECONDS=0
timeout 100 python3 tools/baseline_torch.py --preset mini --batch 1 --prefix 1024 --block 32 \
    --warmup 10 --iters 50 --variants triton --mask-frac 0 --balanced-router --prompt-cache \
    --json "$R/baseline-mini-prompts-b1.json" > "$R/baseline-mini-prompts-b1.log" 2>&1
echo "baseline rc=$? ${SECONDS}s"; grep "balanced\|prefilled\|triton:" "$R/baseline-mini-prompts-b1.log" | cut -c1-200
pack
timeout 40 $C/dllm bench step $M --batch 1 --baseline "$R/baseline-mini-prompts-b1.json" > "$R/step-b1-prompts.txt" 2>&1
grep "^ *[0-9]\|rror" $R/step-b1-prompts.txt | cut -c1-160
pack
timeout 80 $C/dllm bench step $M --batch 1,4,16,64,128 --baseline $D/baseline-mini-balanced.json \
    --json "$R/step-mini-balanced.json" > "$R/step-mini-balanced.txt" 2>&1
grep "^ *[0-9]\|rror" $R/step-mini-balanced.txt | cut -c1-160
echo "total: ${SECONDS}s"
pack
