#!/usr/bin/env bash
# Session 28, call 7. dllm (this build, its tests): a top-p row's second pass (and the passes' segment
# sums) read the logits evict-first (ld.global.cs), against the landed fb0ab23 (dllm_landed). The
# row's lines are dead after that pass but for one segment's walk; 66 rows in flight at batch 64
# hold ~41 MB of the 50 MB L2. Then the 32k lines on the landed build at 8 and 16 steps (call 4
# measured them at 16: 1.46-1.48x, against session 26's 1.55x at 8).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
for v in dllm_landed test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$v.gz > /tmp/$v && chmod +x /tmp/$v; done
timeout 120 /tmp/test_cuda_kernels --test-threads=1 sample_kernel > $R/sampler-test.txt 2>&1; echo "rc=$?" >> $R/sampler-test.txt
grep -h "test result\|^rc=\|panicked" $R/sampler-test.txt
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 sample_kernel > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
declare -A BIN=([cs]="$C/dllm" [landed]="/tmp/dllm_landed")
for i in 1 2; do
  for v in cs landed; do
    for b in 16 64; do
      timeout 40 ${BIN[$v]} bench kernels $M --prefix 1024 --batch $b --steps 4 --temperature 0.7 --top-p 0.9 > $R/k-sampled-b$b-$v-$i.txt 2>&1
    done
  done
done
grep -H "sample_rows\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-60
S="bench step $M --prefix 1024 --steps 8 --batch 64"
for i in 1 2 3; do
  timeout 60 /tmp/dllm_landed $S > $R/greedy-$i.txt 2>&1
  for v in cs landed; do
    timeout 60 ${BIN[$v]} $S --temperature 0.7 --top-p 0.9 > $R/sampled-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/greedy-*.txt $R/sampled-*.txt | sed 's|.*/r/||' | cut -c1-110
for i in 1; do
  for st in 8 16; do
    timeout 120 /tmp/dllm_landed bench step $M --prefix 32736 --steps $st --batch 1,8 > $R/step-32k-s$st-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-32k-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
cd $OUT && tar czf r.tgz r
