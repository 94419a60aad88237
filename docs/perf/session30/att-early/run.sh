#!/usr/bin/env bash
# Session 30, call 8: block_attention_deep's TMA producer asks for the chunks of keys that were in
# the pool before the forward (below the run's first position in it: the step layout's new
# per-token tok_first) before its pdl_wait, as many as its stages hold. Against dllm_c8
# (c8b530d's build), interleaved; the tests first (the attention's against the CPU, chunked
# prefill's fixtures), memcheck of the attention tests.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
gunzip -c $C/dllm_c8.gz > /tmp/dllm_c8 && chmod +x /tmp/dllm_c8
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 attention_variants > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,16,64 > $R/step-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_c8 bench step $M --prefix 1024 --steps 8 --batch 1,16,64 > $R/step-c8-$i.txt 2>&1
  timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1,8 > $R/k32-new-$i.txt 2>&1
  timeout 90 /tmp/dllm_c8 bench step $M --prefix 32736 --steps 8 --batch 1,8 > $R/k32-c8-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt $R/k32-*.txt | sed 's|.*/r/||' | cut -c1-70
cd $OUT && tar czf r.tgz r
