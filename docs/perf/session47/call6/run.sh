#!/usr/bin/env bash
# Session 47's sixth call: the H200 call prepared as call5 (its starts were refused) on the H100
# lent instead, less what only the H200 can show (the lines against session 46's H200 baseline,
# bench generate against its H200 goal); two A/B rounds. `.carry` from `bash tools/carry-ab.sh 8dc3704` with the
# warp-specialized expert tiles taking 64-row items by default (`dllm`; `dllm-base`: 8dc3704,
# which takes them for 128-row items only). call4 (H100) had them 1.6-2.9% faster at batch 1-16.
# 1. The CUDA suite and the fixtures on the new default.
# 2. Interleaved, two rounds: dllm-base against dllm at batch 1, 4, 16, 32, realistic routing.
# 3. (the H200 lines: not here)
# 4. The baseline at batch 1 and 4 with its prefix prefilled from random prompts by the model
#    itself (tools/baseline_torch.py --prompt-cache, new): over random K/V its block routes to
#    ~162 experts (the independent-uniform limit), ours over real prompts to ~150, so no batch-1
#    speedup could be quoted; then ours at batch 1 against it, twice.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry; D=docs/perf/session46
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/device-suite.sh "$R"
echo "suite: ${SECONDS}s"
grep -h "panicked\|FAILED" $R/cuda-tests.txt | head
pack
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,4,16,32"
for i in 1 2; do
  timeout 60 $C/dllm-base bench step $B > $R/w-base-$i.txt 2>&1
  timeout 60 $C/dllm bench step $B > $R/w-new-$i.txt 2>&1
done
for f in $R/w-*.txt; do echo "$(basename $f) $(grep -E '^ +[0-9]+ random' $f | awk '{printf "%s ", $5}')$(grep -m1 -i error $f)"; done
pack
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
SECONDS=0
timeout 200 python3 tools/baseline_torch.py --preset mini --batch 1,4 --prefix 1024 --block 32 \
    --warmup 10 --iters 50 --variants triton --mask-frac 0 --balanced-router --prompt-cache \
    --json "$R/baseline-mini-prompts.json" > "$R/baseline-mini-prompts.log" 2>&1
echo "baseline (prompt cache) rc=$? ${SECONDS}s"; grep "balanced\|prefilled\|triton:" "$R/baseline-mini-prompts.log" | cut -c1-200; tail -n 4 "$R/baseline-mini-prompts.log" | cut -c1-120
pack
for i in 1 2; do
  timeout 60 $C/dllm bench step $M --batch 1,4 --baseline "$R/baseline-mini-prompts.json" > "$R/step-b1-prompts-$i.txt" 2>&1
  grep "^ *[0-9]\|rror\|speedup" $R/step-b1-prompts-$i.txt | cut -c1-160
done
echo "total: ${SECONDS}s"
pack
