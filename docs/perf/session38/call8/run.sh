#!/usr/bin/env bash
# Session 38, call 8: the review commit (the counters' acquire poll in one helper, moe_items.cuh
# wait_count; every_item_size also runs the 64- and 128-row tiles with the item wait off). The
# CUDA suite and fixtures; memcheck of the mid-shape and fp8 mid-shape tests (every_item_size);
# flash fp8 batch 1 and mini bf16 batch 1 and 64, one run each.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
timeout 90 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1 > $R/flash-fp8.txt 2>&1
timeout 90 $C/dllm bench step --preset mini $B --batch 1,64 > $R/mini.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/flash-fp8.txt $R/mini.txt | sed 's|.*/r/||' | cut -c1-120
pack
for t in mid_shape_ops_match_cpu mid_shape_fp8_ops_match_cpu; do
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 $t > $R/memcheck-$t.txt 2>&1
  echo "memcheck $t rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-$t.txt
done
pack
