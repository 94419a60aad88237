#!/usr/bin/env bash
# Session 26, call 4: two experiments in one build (dllm) against the landed code (dllm_base,
# 1484c5a: down's 16-byte stores and early routing weights).
# - gate_up's epilogue with 16-byte stores too, now skipping the rows past the item (in call 2,
#   which computed them, gate_up was 7-15% slower: silu's IEEE division takes its slow path on
#   their zeros, a guess this tests). dllm with --moe-down-unit-tiles 0 is this alone.
# - down with each unit's x resident (call 1's moe_down_ws_resident, on the new epilogue),
#   --moe-down-unit-tiles 2 and 4.
# The tests of both first, the settings interleaved, then the CUDA suite and the fixtures.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 120 $C/test_cuda_kernels --test-threads=1 down_resident_units_match_cpu mid_shape_ops_match_cpu > $R/tests.txt 2>&1; echo "rc=$?" >> $R/tests.txt
grep -h "test result\|^rc=\|panicked" $R/tests.txt
M="--preset mini --device cuda --block 32"
declare -A BIN=([t0]="$C/dllm" [t2]="$C/dllm" [t4]="$C/dllm" [base]="$C/dllm_base")
declare -A OPT=([t0]="--moe-down-unit-tiles 0" [t2]="--moe-down-unit-tiles 2" [t4]="--moe-down-unit-tiles 4" [base]="")
for i in 1 2; do
  for v in t0 base t2 t4; do
    timeout 60 ${BIN[$v]} bench step $M --prefix 1024 --steps 8 --batch 1,16,64,128 ${OPT[$v]} > $R/step-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-120
for v in t0 base; do
  for b in 1 16 64 128; do
    timeout 40 ${BIN[$v]} bench kernels $M --prefix 1024 --batch $b --steps 4 ${OPT[$v]} > $R/k-b$b-$v.txt 2>&1
  done
done
for b in 64 128; do
  timeout 40 ${BIN[t2]} bench kernels $M --prefix 1024 --batch $b --steps 4 ${OPT[t2]} > $R/k-b$b-t2.txt 2>&1
done
grep -H "moe_gate\|moe_down\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-130
for v in t0 base t2; do
  timeout 100 ${BIN[$v]} bench prefill $M --prompt-len 4096 --batch 1,8 ${OPT[$v]} > $R/prefill-4096-$v.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/prefill*.txt | sed 's|.*/r/||' | cut -c1-120
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
cd $OUT && tar czf r.tgz r
