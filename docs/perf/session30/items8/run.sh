#!/usr/bin/env bash
# Session 30, call 4: SHARED_STREAM_MAX_ITEMS 4 -> 8 (the shared expert among batch 16's eight
# 64-row items, where its gate_up is then moe_permute's dependent). The tests (mid_shape_ops now
# also forces the shared expert beside), then batch 16 and 32 against `--shared-expert-items 4`
# (the old rule) in the same binary, interleaved; batch 16 with moe_route off (`--fused-router
# false`) and with the programmatic edges off (`--expert-pdl false`); sampled against greedy at 16.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
S="bench step $M --prefix 1024 --steps 8 --batch 16,32"
for i in 1 2 3 4; do
  timeout 60 $C/dllm $S > $R/items8-$i.txt 2>&1
  timeout 60 $C/dllm $S --shared-expert-items 4 > $R/items4-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/items*.txt | sed 's|.*/r/||' | cut -c1-110
S16="bench step $M --prefix 1024 --steps 8 --batch 16"
for i in 1 2; do
  timeout 60 $C/dllm $S16 --fused-router false > $R/b16-rule-$i.txt 2>&1
  timeout 60 $C/dllm $S16 --expert-pdl false > $R/b16-nopdl-$i.txt 2>&1
  timeout 60 $C/dllm $S16 --temperature 0.7 --top-p 0.9 > $R/b16-sampled-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/b16-*.txt | sed 's|.*/r/||' | cut -c1-110
cd $OUT && tar czf r.tgz r
