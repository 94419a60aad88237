#!/usr/bin/env bash
# Session 59's sixth call, on an H200 only (exits at once on another card): the lines on 65a056f
# (lm_head_pick, the work model counting the lm_head once; tools/gpu-test.sh, stripped and
# gzipped). 1. the CUDA suite and the fixtures; 2. steps at batch 1, 16, 64 and 128, `--fused-pick
# false` (239acaf's path) / on, two rounds; 3. `bench generate`, off / on; 4. session 58's knob
# sweep at batch 64 and 128 on the default, as far as the time allows.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: nothing run"; exit 0; }
SECONDS=0
bash tools/device-suite.sh $R
pack
W="off:$C/dllm:--fused-pick false;on:$C/dllm"
bash tools/ab-ways.sh $R 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
pack
bash tools/ab-ways.sh $R/generate 1 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
W="default:$C/dllm"
W+=";graphs256:$C/dllm:--cuda-graph-max-bs 256"
W+=";m192off:$C/dllm:--moe-gate-up-m192 false"
W+=";items64:$C/dllm:--moe-item-rows 64"
W+=";attdeepoff:$C/dllm:--att-deep false"
W+=";attctas2:$C/dllm:--att-ctas-per-sm 2"
W+=";combine:$C/dllm:--fused-moe-norm false"
W+=";residoff:$C/dllm:--residual-gemm false"
W+=";shared0:$C/dllm:--shared-expert-items 0"
W+=";default2:$C/dllm"
timeout $((570 - SECONDS)) bash tools/ab-ways.sh $R/sweep 1 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 64,128
pack
echo "total: ${SECONDS}s"
