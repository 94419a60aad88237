#!/usr/bin/env bash
# Prepared in session 47 for an H200 (not run: no start succeeded). `.carry` from
# `bash tools/carry-ab.sh 8dc3704` at the session's HEAD (the warp-specialized expert tiles at
# 64-row items by default; `dllm-base` unused here). One call, ~8 min:
# 1. the CUDA suite and the fixtures on the new default (run on the H100 in call6, not yet on an H200);
# 2. the baseline at batch 1-128 with its new default, the prefix prefilled from random prompts
#    (--prompt-cache; session 46's H200 reference was over random K/V, whose batch-1 block reached
#    162.6 experts against our ~151-153: not quotable);
# 3. ours at batch 1-128 against it, twice (issue 13's lines on the new default, and the speedup
#    at every batch where the experts agree within 5%);
# 4. bench generate (64 requests, 2 tokens a step) on the new default.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/device-suite.sh "$R"
echo "suite: ${SECONDS}s"
pack
timeout 330 python3 tools/baseline_torch.py --preset mini --batch 1,4,16,64,128 --prefix 1024 --block 32 \
    --warmup 10 --iters 50 --variants triton --mask-frac 0 \
    --json "$R/baseline-mini-prompts.json" > "$R/baseline-mini-prompts.log" 2>&1
echo "baseline rc=$? ${SECONDS}s"; grep "balanced\|prefilled\|triton:" "$R/baseline-mini-prompts.log" | cut -c1-200
pack
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,4,16,64,128"
for i in 1 2; do
  timeout 80 $C/dllm bench step $M --baseline "$R/baseline-mini-prompts.json" --json "$R/step-mini-$i.json" > "$R/step-mini-$i.txt" 2>&1
  grep "^ *[0-9]\|rror" $R/step-mini-$i.txt | cut -c1-160
done
pack
timeout 90 $C/dllm bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 --json "$R/generate.json" > "$R/generate.txt" 2>&1
grep -h "tokens/s\|rror" $R/generate.txt | cut -c1-200
echo "total: ${SECONDS}s"
pack
