#!/usr/bin/env bash
# Session 22, call 4: the 128-row down tiles' epilogue through shared memory and bulk copies
# (moe_down_m128_ws_bulk, --moe-bulk-epilogue, on by default in this build) against the 4-byte
# stores from the registers; one binary, interleaved. Tests first (the mid shapes run both).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match cuda_graph_replay > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for bt in 64 128; do
  for v in true false; do
    timeout 40 $C/dllm bench kernels $M --prefix 1024 --batch $bt --steps 4 --moe-bulk-epilogue $v > $R/k-b$bt-$v.txt 2>&1
  done
done
grep -H "moe_down\|moe_gate_up\|sum of" $R/k-*.txt | sed 's|.*/r/||'
for i in 1 2; do
  for v in true false; do
    timeout 80 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64,128 --moe-bulk-epilogue $v > $R/step-1k-$v-$i.txt 2>&1
    timeout 90 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 --moe-bulk-epilogue $v > $R/prefill-4096-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-1k-*.txt $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-120
for v in true false; do
  timeout 120 $C/dllm bench prefill $M --prompt-len 32736 --batch 1 --moe-bulk-epilogue $v > $R/prefill-32736-$v.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/prefill-32736-*.txt | sed 's|.*/r/||' | cut -c1-120
cd $OUT && tar czf r.tgz r
