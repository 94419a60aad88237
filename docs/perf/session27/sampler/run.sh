#!/usr/bin/env bash
# Session 27, call 1: the sampler's two passes over a top-p row (sample_rows, nucleus_draw) made
# leaner (dllm, this build) against 09c024d's (dllm_base): the second pass's segment sums issue
# their loads before any token's work (they were issued one token at a time, one load in flight a
# lane), and the first pass keeps the max key alone and takes 14 instructions a token instead of
# ~30. Greedy steps do not run the sampler: they are timed once, for the sampled-over-greedy ratio.
# The sampler's test first, then steps and kernels interleaved, then the CUDA suite, the fixtures
# and memcheck of the sampler's test.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 120 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/sampler-test.txt 2>&1; echo "rc=$?" >> $R/sampler-test.txt
grep -h "test result\|^rc=\|panicked\|sampler:" $R/sampler-test.txt
M="--preset mini --device cuda --block 32"
S="bench step $M --prefix 1024 --steps 8 --batch 1,16,64"
declare -A BIN=([new]="$C/dllm" [base]="$C/dllm_base")
for i in 1 2; do
  timeout 60 $C/dllm $S > $R/step-greedy-$i.txt 2>&1
  for v in new base; do
    timeout 60 ${BIN[$v]} $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-110
for v in new base; do
  for b in 16 64; do
    timeout 40 ${BIN[$v]} bench kernels $M --prefix 1024 --batch $b --steps 4 --temperature 0.7 --top-p 0.9 > $R/k-sampled-b$b-$v.txt 2>&1
  done
done
grep -H "sample_rows\|row_argmax\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-130
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
cd $OUT && tar czf r.tgz r
