#!/usr/bin/env bash
# Session 29, call 6. dllm (this build): the one-warpgroup wgmma expert tiles' down (batches 1-32
# at mini) launched as gate_up's programmatic dependent, its first stages' weights asked for
# before its pdl_wait. Against the same binary with `--expert-pdl false` (down launched plainly)
# and dllm_base (22c6fae's build), interleaved; moe_route forced at batch 8-32 against the rule;
# then the tests.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
gunzip -c $C/dllm_base.gz > /tmp/dllm_base && chmod +x /tmp/dllm_base
M="--preset mini --device cuda --block 32"
S="bench step $M --prefix 1024 --steps 8 --batch 1,4,16"
for i in 1 2 3; do
  timeout 60 $C/dllm $S > $R/step-pdl-$i.txt 2>&1
  timeout 60 $C/dllm $S --expert-pdl false > $R/step-nopdl-$i.txt 2>&1
  timeout 60 /tmp/dllm_base $S > $R/step-base-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
for i in 1 2; do
  timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1 > $R/step-32k-pdl-$i.txt 2>&1
  timeout 90 /tmp/dllm_base bench step $M --prefix 32736 --steps 8 --batch 1 > $R/step-32k-base-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-32k-*.txt | sed 's|.*/r/||' | cut -c1-100
# moe_route at 33-1024 rows (call 5: level or faster at batch 4 and 16 in steps, slower from 64).
S2="bench step $M --prefix 1024 --steps 8 --batch 8,16,32"
for i in 1 2 3; do
  timeout 60 $C/dllm $S2 --fused-router true > $R/step-fused-$i.txt 2>&1
  timeout 60 $C/dllm $S2 > $R/step-rule-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-fused-*.txt $R/step-rule-*.txt | sed 's|.*/r/||' | cut -c1-100
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked" $R/cuda-tests.txt $R/fixtures.txt
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
cd $OUT && tar czf r.tgz r
