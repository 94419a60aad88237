#!/usr/bin/env bash
# Session 28, call 1. The sampler's weights by ex2.approx (dllm, this build) against 939d6ae
# (dllm_base): a top-p row's second pass was ~26 instructions a token, 10 of them expf's; it is
# now ~13 (the weight as 2^((v - m) log2e / t) by one MUFU, keys compared whole, no third sum
# without min-p). Also what a cluster barrier's GPU-scope fence costs in the sampler's pattern
# (fence/fence_bench.cu). The sampler's test and memcheck first; kernels and steps interleaved;
# then the suite and the fixtures.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
for v in dllm_base fence_bench; do gunzip -c $C/$v.gz > /tmp/$v && chmod +x /tmp/$v; done
timeout 60 /tmp/fence_bench > $R/fence.txt 2>&1; echo "rc=$?" >> $R/fence.txt; cat $R/fence.txt
timeout 120 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/sampler-test.txt 2>&1; echo "rc=$?" >> $R/sampler-test.txt
grep -h "test result\|^rc=\|panicked\|sampler:" $R/sampler-test.txt
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
declare -A BIN=([new]="$C/dllm" [base]="/tmp/dllm_base")
for i in 1 2; do
  for v in new base; do
    for b in 16 64; do
      timeout 40 ${BIN[$v]} bench kernels $M --prefix 1024 --batch $b --steps 4 --temperature 0.7 --top-p 0.9 > $R/k-sampled-b$b-$v-$i.txt 2>&1
    done
  done
done
grep -H "sample_rows\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-130
S="bench step $M --prefix 1024 --steps 8 --batch 1,16,64"
for i in 1 2; do
  timeout 60 $C/dllm $S > $R/step-greedy-$i.txt 2>&1
  for v in new base; do
    timeout 60 ${BIN[$v]} $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
cd $OUT && tar czf r.tgz r
