#!/usr/bin/env bash
# Session 47's seventh call (the H100 of call6, warm; .carry as call6's): call6's baseline with its
# prefix prefilled from random prompts (--prompt-cache) at batch 16, 64 and 128, and ours at those
# batches against it, so every batch has a same-GPU, same-call comparison.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R" > /dev/null
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
timeout 330 python3 tools/baseline_torch.py --preset mini --batch 16,64,128 --prefix 1024 --block 32 \
    --warmup 10 --iters 50 --variants triton --mask-frac 0 --balanced-router --prompt-cache \
    --json "$R/baseline-mini-prompts-16-128.json" > "$R/baseline-mini-prompts-16-128.log" 2>&1
echo "baseline (prompt cache) rc=$? ${SECONDS}s"; grep "balanced\|prefilled\|triton:" "$R/baseline-mini-prompts-16-128.log" | cut -c1-200
pack
timeout 100 $C/dllm bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 16,64,128 \
    --baseline "$R/baseline-mini-prompts-16-128.json" --json "$R/step-prompts-16-128.json" > "$R/step-prompts-16-128.txt" 2>&1
grep "^ *[0-9]\|rror\|speedup" $R/step-prompts-16-128.txt | cut -c1-160
echo "total: ${SECONDS}s"
pack
