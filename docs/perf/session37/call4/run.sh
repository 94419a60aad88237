#!/usr/bin/env bash
# Session 37, call 4: the fp8 16-row tiles without the ring (the code to commit). The CUDA suite
# and fixtures; memcheck and racecheck of small_items_long_k_match_cpu; flash fp8 at batch 1, 4,
# 16 and mini fp8 at 1, 4, 16, 64, each by the default rule and with 16-row items forced (where
# the rule takes 64-row items: batch 16 and up), two runs each; mini bf16 (unchanged path).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
t=small_items_long_k_match_cpu
for tool in memcheck racecheck; do
  timeout 150 compute-sanitizer --tool $tool --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 $t > $R/$tool-$t.txt 2>&1
  echo "$tool $t rc=$?"; grep -h "ERROR SUMMARY\|RACECHECK SUMMARY" $R/$tool-$t.txt
done
pack
F="--preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16"
M="--preset mini --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16,64"
for i in 1 2; do
  timeout 90 $C/dllm bench step $F > $R/flash-rule-$i.txt 2>&1
  timeout 90 $C/dllm bench step $F --moe-item-rows 16 > $R/flash-m16-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M > $R/mini-fp8-rule-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --moe-item-rows 16 > $R/mini-fp8-m16-$i.txt 2>&1
done
timeout 60 $C/dllm bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16,64 > $R/mini-bf16.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/flash-*.txt $R/mini-*.txt | sed 's|.*/r/||' | cut -c1-110
grep -l "rror\|panic" $R/*.txt
pack
