#!/usr/bin/env bash
# Session 37, call 8: cf8d1be (the tiles' work item by one helper, behaviour unchanged). The CUDA
# suite and fixtures; memcheck of the fp8 mid-shape test (the fp8 16-row and 64-row tiles, the
# shared expert among the 16-row ones) and of the mid-shape test (the bf16 tiles); flash fp8 at
# batch 1 and mini bf16 at batch 1 and 64, two runs each.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
for t in mid_shape_fp8_ops_match_cpu mid_shape_ops_match_cpu; do
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 $t > $R/memcheck-$t.txt 2>&1
  echo "memcheck $t rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-$t.txt
done
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do
  timeout 90 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1 > $R/flash-fp8-$i.txt 2>&1
  timeout 90 $C/dllm bench step --preset mini $B --batch 1,64 > $R/mini-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/flash-fp8-*.txt $R/mini-*.txt | sed 's|.*/r/||' | cut -c1-110
grep -l "rror\|panic" $R/*.txt
pack
