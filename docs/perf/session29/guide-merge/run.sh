#!/usr/bin/env bash
# Session 29, call 4. dllm (this build, its tests): a top-p row's first digit published with the
# max pass (each slice's groups at its own max's scale, brought to the row's after the barrier):
# one cluster barrier fewer a row. Against dllm_base (d50c7b8's build: the sampler as landed in
# session 28). sample_rows' kernel time, then sampled and greedy steps interleaved.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
gunzip -c $C/dllm_base.gz > /tmp/dllm_base && chmod +x /tmp/dllm_base
timeout 120 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/sampler-test.txt 2>&1; echo "rc=$?" >> $R/sampler-test.txt
grep -h "test result\|^rc=\|panicked" $R/sampler-test.txt
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
grep -H "sample_rows\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-60
S="bench step $M --prefix 1024 --steps 8 --batch 1,16,64"
for i in 1 2 3 4; do
  timeout 60 $C/dllm $S > $R/greedy-$i.txt 2>&1
  for v in new base; do
    timeout 60 ${BIN[$v]} $S --temperature 0.7 --top-p 0.9 > $R/sampled-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/greedy-*.txt $R/sampled-*.txt | sed 's|.*/r/||' | cut -c1-110
for i in 1 2; do
  timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1,8 > $R/step-32k-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-32k-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
cd $OUT && tar czf r.tgz r
