#!/usr/bin/env bash
# Session 21, call 5: moe_router_select's score rows sized to the router (dynamic shared memory:
# 64 warps an SM at 256 experts instead of 24) against 043ca00's binary (dllm_base), interleaved.
# Tests of the new build (the router at mini's shape, fused off, is in fused_router_matches_cpu)
# and memcheck of the router and mid-shape tests.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 fused_router_matches mid_shape_ops_match > $R/memcheck-router.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-router.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck-router.txt
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  for b in dllm dllm_base; do
    timeout 80 $C/$b bench step $M --prefix 1024 --steps 8 --batch 1,4,16,64,128 > $R/step-1k-$b-$i.txt 2>&1
    timeout 120 $C/$b bench prefill $M --prompt-len 4096 --batch 1,8 > $R/prefill-4096-$b-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-120
for bt in 64 128; do
  for b in dllm dllm_base; do
    timeout 60 $C/$b bench kernels $M --prefix 1024 --batch $bt --steps 4 > $R/k-b$bt-$b.txt 2>&1
  done
done
grep -H "moe_router_select\|sum of" $R/k-*.txt | sed 's|.*/r/||'
cd $OUT && tar czf r.tgz r
