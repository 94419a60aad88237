#!/usr/bin/env bash
# Session 26, call 6: the PyTorch baseline (tools/baseline_torch.py: torch.compile + CUDA graph,
# the Triton fused MoE with tile configs tuned per batch; --mask-frac 0, random block ids) and
# this build's step (1484c5a's code) in the same call, as tools/bench-device.sh runs them, at the
# batches 1 and 64 (what the device time left allows); the step's JSON with the baseline attached.
# Only the baseline's `triton` variant (CUDA graph + Triton fused MoE), to fit the device time
# left: it was the fastest of compile / triton / eager at every batch in session 14 (b64: 16.35
# against 19.48 and 34.82 ms).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 170 python3 tools/baseline_torch.py --preset mini --batch 1,64 --prefix 1024 --block 32 \
    --warmup 10 --iters 50 --variants triton --mask-frac 0 --json "$R/baseline-mini-mf0.json" > "$R/baseline-mini-mf0.log" 2>&1
echo "baseline rc=$?"; tail -n 7 "$R/baseline-mini-mf0.log"
B=$([ -s "$R/baseline-mini-mf0.json" ] && echo "--baseline $R/baseline-mini-mf0.json")
timeout 90 $C/dllm bench step --preset mini --device cuda --batch 1,64 --prefix 1024 --block 32 --steps 16 \
    --tokens random $B --json "$R/step-mini.json" > "$R/step-mini.txt" 2>&1
cat "$R/step-mini.txt" | cut -c1-150
cd $OUT && tar czf r.tgz r
