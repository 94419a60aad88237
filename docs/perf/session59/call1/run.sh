#!/usr/bin/env bash
# Session 59's first call (session 58's call7 again, on 239acaf, which changes no kernel since dfa1d50; `.carry/dllm` is 239acaf's stripped release binary): the measuring knobs at batch 64 and 128 on an H200. Every knob was last
# swept on H100s (sessions 47 and 49), where the expert tiles are bound by DRAM; on the H200 they
# are bound by the L2 (docs/PERF.md), so the best settings may differ. Runs only on an H200
# (exits at once on another card). `.carry/dllm` is dfa1d50. The default
# first and last, each knob once between them.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: no sweep"; exit 0; }
SECONDS=0
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
bash tools/ab-ways.sh $R 1 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 64,128
pack
echo "total: ${SECONDS}s"
