#!/usr/bin/env bash
# Session 58's sixth call. `.carry/dllm` is dfa1d50 (most_confident selects rather than sorts),
# `.carry/dllm-base` 8e29d6d (tools/gpu-test.sh; both report the device's idle a step).
# 1. On any card: steps at batch 1, 64 and 128, base and new, two rounds (the host's unmasking is
#    on the device's idle; the idle line says what it saves).
# 2. On an H200 only: call5's knob sweep at batch 64 and 128 (every knob last swept on H100s,
#    whose expert tiles are DRAM-bound; the H200's are L2-bound), the default first and last.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/ab-ways.sh $R 2 "base:$C/dllm-base;new:$C/dllm" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,64,128
for f in $R/w-*.txt; do echo "$(basename $f): $(grep 'device idle' $f | sed 's/.*kernel): //')"; done
pack
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: no sweep; total ${SECONDS}s"; exit 0; }
W="default:$C/dllm"
W+=";graphs256:$C/dllm:--cuda-graph-max-bs 256"
W+=";m192on:$C/dllm:--moe-gate-up-m192 true"
W+=";m192off:$C/dllm:--moe-gate-up-m192 false"
W+=";items64:$C/dllm:--moe-item-rows 64"
W+=";attdeepoff:$C/dllm:--att-deep false"
W+=";atttmaoff:$C/dllm:--att-tma false"
W+=";attctas2:$C/dllm:--att-ctas-per-sm 2"
W+=";combine:$C/dllm:--fused-moe-norm false"
W+=";residoff:$C/dllm:--residual-gemm false"
W+=";shared0:$C/dllm:--shared-expert-items 0"
W+=";default2:$C/dllm"
bash tools/ab-ways.sh $R/sweep 1 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 64,128
pack
echo "total: ${SECONDS}s"
