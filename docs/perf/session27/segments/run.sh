#!/usr/bin/env bash
# Session 27, call 3. Two changes to the sampler on c86b456 (dllm_base), each a build:
# - dllm_seg: the segment sums (a top-p row's second pass, and the draws of the passes over the
#   row) as float4 pieces: segments of whole 128-token pieces (at most SAMPLE_THREADS a slice: 154
#   in a 19,648-token slice of mini's row, where there were 256 of 96), warp w taking segments
#   w, w + 8, ..., four at a time, a float4 a lane of each in flight (c86b456: a scalar load a lane
#   and token, eight segments of one warp at a time).
# - dllm (this build, its tests): dllm_seg, and a top-p row's first-digit group sums published
#   with the max behind its cluster barrier (each slice's against its own max, moved onto the
#   row's when combined), one cluster barrier a row fewer.
# Call 2's probes put the second pass (with the guide bin before it) at 0.77 of sample_rows'
# 1.33 ms at batch 64, the max pass at 0.35, the tail at 0.22. The sampler's test and its
# memcheck first, steps and kernels interleaved, then the suite and the fixtures.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
for v in dllm_base dllm_seg; do gunzip -c $C/$v.gz > /tmp/$v && chmod +x /tmp/$v; done
timeout 120 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/sampler-test.txt 2>&1; echo "rc=$?" >> $R/sampler-test.txt
grep -h "test result\|^rc=\|panicked\|sampler:" $R/sampler-test.txt
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
S="bench step $M --prefix 1024 --steps 8 --batch 1,16,64"
declare -A BIN=([new]="$C/dllm" [seg]="/tmp/dllm_seg" [base]="/tmp/dllm_base")
for i in 1 2; do
  timeout 60 $C/dllm $S > $R/step-greedy-$i.txt 2>&1
  for v in new seg base; do
    timeout 60 ${BIN[$v]} $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-110
for v in new seg base; do
  for b in 16 64; do
    timeout 40 ${BIN[$v]} bench kernels $M --prefix 1024 --batch $b --steps 4 --temperature 0.7 --top-p 0.9 > $R/k-sampled-b$b-$v.txt 2>&1
  done
done
grep -H "sample_rows\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-130
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
cd $OUT && tar czf r.tgz r
