#!/usr/bin/env bash
# Session 26, call 6: the PyTorch baseline (tools/baseline_torch.py: torch.compile + CUDA graph,
# the Triton fused MoE with tile configs tuned per batch; --mask-frac 0, random block ids) and
# this build's step (1484c5a's code) in the same call, as tools/bench-device.sh runs them, at the
# batches the baseline was last run at (session 14); the step's JSON with the baseline attached.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 330 python3 tools/baseline_torch.py --preset mini --batch 1,4,16,64 --prefix 1024 --block 32 \
    --warmup 10 --iters 50 --variants compile,triton,eager --mask-frac 0 --json "$R/baseline-mini-mf0.json" > "$R/baseline-mini-mf0.log" 2>&1
echo "baseline rc=$?"; tail -n 7 "$R/baseline-mini-mf0.log"
B=$([ -s "$R/baseline-mini-mf0.json" ] && echo "--baseline $R/baseline-mini-mf0.json")
timeout 90 $C/dllm bench step --preset mini --device cuda --batch 1,4,16,64 --prefix 1024 --block 32 --steps 16 \
    --tokens random $B --json "$R/step-mini.json" > "$R/step-mini.txt" 2>&1
cat "$R/step-mini.txt" | cut -c1-150
cd $OUT && tar czf r.tgz r
