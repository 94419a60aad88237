#!/usr/bin/env bash
# Session 22, call 5: moe_route (the batch-1 router in one launch) over clusters of 16 CTAs
# (moe_route_wide, --route-cluster-wide true) against 8; one binary, interleaved.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 fused_router > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for v in true false; do
  timeout 40 $C/dllm bench kernels $M --prefix 1024 --batch 1 --steps 4 --route-cluster-wide $v > $R/k-b1-$v.txt 2>&1
done
grep -H "moe_route\|sum of" $R/k-*.txt | sed 's|.*/r/||'
for i in 1 2 3; do
  for v in true false; do
    timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1 --route-cluster-wide $v > $R/step-1k-$v-$i.txt 2>&1
    timeout 60 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1 --route-cluster-wide $v > $R/step-32k-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-110
cd $OUT && tar czf r.tgz r
