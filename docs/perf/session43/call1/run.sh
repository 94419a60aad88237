#!/usr/bin/env bash
# Session 43, call 1. `dllm`: 8fd5d69 (row_argmax as a thread block cluster of 2-8 CTAs
# a row below 2 x SMs rows, csrc/lm_head.cu and src/backend/cuda/pick.rs; the side-stream L2
# prefetch behind `--l2-prefetch weights|experts[:MB]`, csrc/l2_prefetch.cu and
# src/backend/cuda/l2_prefetch.rs); `dllm-base`: bde5430 (tools/carry-ab.sh). Mini bf16 steps at
# batch 1, 4, 16 (16 steps each): base, new, and new with each prefetch mode, interleaved, two
# rounds; `bench kernels` at batch 1 (row_argmax's row, the GEMMs and the experts with and without
# the prefetch). The CUDA suite is call 2.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,4,16"
for i in 1 2; do
  SECONDS=0
  timeout 100 $C/dllm-base bench step $B > $R/s-base-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B > $R/s-new-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B --l2-prefetch weights > $R/s-w-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B --l2-prefetch experts:16 > $R/s-e16-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B --l2-prefetch experts:32 > $R/s-e32-$i.txt 2>&1
  echo "round $i: ${SECONDS}s"
  grep -H "^ *[0-9]\|rror" $R/s-*-$i.txt | sed 's|.*/r/||' | cut -c1-80
  pack
done
K="--preset mini --device cuda --prefix 1024 --batch 1"
timeout 100 $C/dllm-base bench kernels $K > $R/k-base-b1.txt 2>&1
timeout 100 $C/dllm bench kernels $K > $R/k-new-b1.txt 2>&1
timeout 100 $C/dllm bench kernels $K --l2-prefetch experts:32 > $R/k-e32-b1.txt 2>&1
grep -H "row_argmax\|cublas\|l2_pref\|moe_\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-110
pack
