#!/usr/bin/env bash
# Session 28, call 3. Two changes to a top-p row's tail, on b6700b7 (dllm_head):
# - dllm_tail (and its tests): the draw's pick written by the CTA that finds it, and the
#   cluster's last barrier split around its walk (id_draw): the barrier that handed the token
#   round the cluster is gone;
# - dllm (this build, its tests): dllm_tail, and the second digit's histogram of the bin's tokens
#   filled in the second pass and published by its barrier: the second digit's own barrier gone.
# Call 2's probes (b6700b7, batch 64): the max pass 0.351 ms, the guide's bin 0.149, the second
# pass 0.366, the tail (two digits, the draw, the last barriers) 0.244; sample_rows 1.110.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
for v in dllm_head dllm_tail test_cuda_kernels test_model_vs_fixtures test_cuda_kernels_tail test_model_vs_fixtures_tail; do
  gunzip -c $C/$v.gz > /tmp/$v && chmod +x /tmp/$v
done
for t in tail d1; do
  T=/tmp/test_cuda_kernels; [ $t = tail ] && T=/tmp/test_cuda_kernels_tail
  timeout 120 $T --test-threads=1 sample_kernel > $R/sampler-test-$t.txt 2>&1; echo "rc=$?" >> $R/sampler-test-$t.txt
  grep -h "test result\|^rc=\|panicked" $R/sampler-test-$t.txt
  timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $T --test-threads=1 sample_kernel > $R/memcheck-$t.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-$t.txt
  grep -h "ERROR SUMMARY\|test result" $R/memcheck-$t.txt
done
M="--preset mini --device cuda --block 32"
declare -A BIN=([d1]="$C/dllm" [tail]="/tmp/dllm_tail" [head]="/tmp/dllm_head")
for i in 1 2; do
  for v in d1 tail head; do
    for b in 16 64; do
      timeout 40 ${BIN[$v]} bench kernels $M --prefix 1024 --batch $b --steps 4 --temperature 0.7 --top-p 0.9 > $R/k-sampled-b$b-$v-$i.txt 2>&1
    done
  done
done
grep -H "sample_rows\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-60
S="bench step $M --prefix 1024 --steps 8 --batch 1,16,64"
for i in 1 2; do
  timeout 60 $C/dllm $S > $R/step-greedy-$i.txt 2>&1
  for v in d1 tail head; do
    timeout 60 ${BIN[$v]} $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-110
for t in d1 tail; do
  T=/tmp/test_cuda_kernels; F=/tmp/test_model_vs_fixtures; [ $t = tail ] && T=/tmp/test_cuda_kernels_tail && F=/tmp/test_model_vs_fixtures_tail
  timeout 200 $T --test-threads=1 > $R/cuda-tests-$t.txt 2>&1; echo "rc=$?" >> $R/cuda-tests-$t.txt
  timeout 60 $F > $R/fixtures-$t.txt 2>&1; echo "rc=$?" >> $R/fixtures-$t.txt
  grep -h "test result\|^rc=" $R/cuda-tests-$t.txt $R/fixtures-$t.txt
  grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests-$t.txt | head -20
done
cd $OUT && tar czf r.tgz r
