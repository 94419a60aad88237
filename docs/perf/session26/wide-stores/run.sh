#!/usr/bin/env bash
# Session 26, call 2: the wgmma expert tiles' epilogue (one-warpgroup and warp-specialized):
# down's routing weights loaded before the k-steps instead of in the epilogue, and 16-byte stores
# (a quad's lanes trade columns) instead of 4-byte ones (dllm, this build), against the code as it
# stood (dllm_base: call 1's build with --moe-down-unit-tiles 0, whose kernels are 0384357's).
# The mid-shape test first, the two binaries interleaved, then the CUDA suite and the fixtures.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 90 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu > $R/mid-test.txt 2>&1; echo "rc=$?" >> $R/mid-test.txt
grep -h "test result\|^rc=\|panicked" $R/mid-test.txt
M="--preset mini --device cuda --block 32"
declare -A BIN=([new]="$C/dllm" [base]="$C/dllm_base")
declare -A OPT=([new]="" [base]="--moe-down-unit-tiles 0")
for i in 1 2; do
  for v in new base; do
    timeout 60 ${BIN[$v]} bench step $M --prefix 1024 --steps 8 --batch 1,16,64,128 ${OPT[$v]} > $R/step-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-120
for v in new base; do
  for b in 1 16 64 128; do
    timeout 40 ${BIN[$v]} bench kernels $M --prefix 1024 --batch $b --steps 4 ${OPT[$v]} > $R/k-b$b-$v.txt 2>&1
  done
done
grep -H "moe_gate\|moe_down\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-130
for v in new base; do
  timeout 100 ${BIN[$v]} bench prefill $M --prompt-len 4096 --batch 1,8 ${OPT[$v]} > $R/prefill-4096-$v.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/prefill*.txt | sed 's|.*/r/||' | cut -c1-120
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
cd $OUT && tar czf r.tgz r
