#!/usr/bin/env bash
# Session 26, call 1: the warp-specialized down at 128-row items with each unit's x resident in
# shared memory (moe_down_ws_resident, `--moe-down-unit-tiles N`: a unit is N column tiles of an
# item; 0 is moe_gemm_ws, x read again every tile). Its test and the mid-shape test first, then
# one binary's settings interleaved: steps at batch 64 and 128, kernels, prefill.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 120 $C/test_cuda_kernels --test-threads=1 down_resident_units_match_cpu mid_shape_ops_match_cpu > $R/tests.txt 2>&1; echo "rc=$?" >> $R/tests.txt
grep -h "test result\|^rc=\|panicked" $R/tests.txt
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  for t in 0 2 4 8; do
    timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64,128 --moe-down-unit-tiles $t > $R/step-t$t-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-120
for t in 0 4 8; do
  for b in 64 128; do
    timeout 40 $C/dllm bench kernels $M --prefix 1024 --batch $b --steps 4 --moe-down-unit-tiles $t > $R/k-b$b-t$t.txt 2>&1
  done
done
grep -H "moe_gate\|moe_down\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-130
for t in 0 4; do
  timeout 100 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 --moe-down-unit-tiles $t > $R/prefill-4096-t$t.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/prefill*.txt | sed 's|.*/r/||' | cut -c1-120
cd $OUT && tar czf r.tgz r
