#!/usr/bin/env bash
# Session 38, call 10: 128-row items from 32 rows an expert on average (was 48; call 9). The CUDA
# suite and fixtures; memcheck of the mid-shape test (its 150 rows now take 128-row items);
# mini bf16 at batch 16, 32, 64 with the rule against 64-row items forced, interleaved, two runs
# each.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
pack
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 16,32,64"
for i in 1 2; do
  timeout 120 $C/dllm bench step $B > $R/rule-$i.txt 2>&1
  timeout 120 $C/dllm bench step $B --moe-item-rows 64 > $R/rows64-$i.txt 2>&1
done
for f in rule rows64; do grep -H "^ *[0-9]\|rror" $R/$f-*.txt | sed 's|.*/r/||' | cut -c1-110; done
pack
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu > $R/memcheck-mid.txt 2>&1
echo "memcheck rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-mid.txt
pack
