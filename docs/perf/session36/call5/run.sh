#!/usr/bin/env bash
# Session 36, call 5: 327e968's build (call 4's). The PyTorch baseline (tools/baseline_torch.py
# --variants triton --mask-frac 0) and our steps against it in the same call; `bench kernels` at
# batch 1 and 16 (greedy) for where those steps' time goes now.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
M="--preset mini --device cuda --block 32"
for b in 1 16; do
  timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch $b > $R/k-b$b.txt 2>&1
done
pack
timeout 280 python3 tools/baseline_torch.py --preset mini --batch 1,4,16,64,128 --prefix 1024 --block 32 \
    --warmup 10 --iters 50 --variants triton --mask-frac 0 --json "$R/baseline-mini-mf0.json" > "$R/baseline-mini-mf0.log" 2>&1
echo "baseline rc=$?"; tail -n 6 "$R/baseline-mini-mf0.log" | cut -c1-60
B=$([ -s "$R/baseline-mini-mf0.json" ] && echo "--baseline $R/baseline-mini-mf0.json")
timeout 90 $C/dllm bench step $M --batch 1,4,16,64,128 --prefix 1024 --steps 16 \
    --tokens random $B --json "$R/step-mini.json" > "$R/step-mini.txt" 2>&1
grep "^ *[0-9]" $R/step-mini.txt | cut -c1-150
grep -l "rror\|panic" $R/*.txt
pack
