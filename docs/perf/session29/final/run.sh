#!/usr/bin/env bash
# Session 29, call 7: the final code (17412cf: moe_route up to 512 rows by default, down's tiles as
# gate_up's programmatic dependents, the sampler's first digit with the max pass). Its tests, then
# the lines: steps at 1k and 32k, prefill of 4,096, sampled against greedy, bench generate.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked" $R/cuda-tests.txt $R/fixtures.txt
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  timeout 90 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16,64,128 > $R/step-1k-$i.txt 2>&1
  timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1,8 > $R/step-32k-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-120
for i in 1 2; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 --temperature 0.7 --top-p 0.9 > $R/sampled-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 > $R/greedy-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/sampled-*.txt $R/greedy-*.txt | sed 's|.*/r/||' | cut -c1-100
timeout 90 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 > $R/prefill-4096.txt 2>&1
grep -h "^ *4096\|rror" $R/prefill-4096.txt
timeout 90 $C/dllm bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate.txt 2>&1
grep -h "tokens/s\|rror" $R/generate.txt
cd $OUT && tar czf r.tgz r
