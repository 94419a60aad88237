#!/usr/bin/env bash
# Session 28, call 2. On b6700b7 (dllm_head: the weights by ex2.approx):
# - dllm (this build, its tests): the draw's pick written by the CTA that finds it, and the
#   cluster's last barrier split around its walk (id_draw): a top-p row's barrier that handed
#   the token round the cluster is gone;
# - probes (timing only, docs/perf/session28/probe/*.patch): dllm_p2 stops a top-p row after the
#   max pass, dllm_p0 after the guide's bin, dllm_p1 after the second pass's sums;
# - fence_bench (docs/perf/session28/fence/): what a cluster barrier's GPU-scope fence costs.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
for v in dllm_head dllm_p0 dllm_p1 dllm_p2 fence_bench fence_bench_shared test_cuda_kernels test_model_vs_fixtures; do
  gunzip -c $C/$v.gz > /tmp/$v && chmod +x /tmp/$v
done
timeout 60 /tmp/fence_bench > $R/fence.txt 2>&1; echo "rc=$?" >> $R/fence.txt; cat $R/fence.txt
if ! grep -q "^rc=0" $R/fence.txt; then
  timeout 60 /tmp/fence_bench_shared > $R/fence-shared.txt 2>&1; echo "rc=$?" >> $R/fence-shared.txt; cat $R/fence-shared.txt
fi
timeout 120 /tmp/test_cuda_kernels --test-threads=1 sample_kernel > $R/sampler-test.txt 2>&1; echo "rc=$?" >> $R/sampler-test.txt
grep -h "test result\|^rc=\|panicked\|sampler:" $R/sampler-test.txt
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 sample_kernel > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
declare -A BIN=([tail]="$C/dllm" [head]="/tmp/dllm_head" [p0]="/tmp/dllm_p0" [p1]="/tmp/dllm_p1" [p2]="/tmp/dllm_p2")
for i in 1 2; do
  for v in tail head p2 p0 p1; do
    for b in 16 64; do
      timeout 40 ${BIN[$v]} bench kernels $M --prefix 1024 --batch $b --steps 4 --temperature 0.7 --top-p 0.9 > $R/k-sampled-b$b-$v-$i.txt 2>&1
    done
  done
done
grep -H "sample_rows\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-60
S="bench step $M --prefix 1024 --steps 8 --batch 16,64"
for i in 1 2; do
  timeout 60 $C/dllm $S > $R/step-greedy-$i.txt 2>&1
  for v in tail head; do
    timeout 60 ${BIN[$v]} $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
cd $OUT && tar czf r.tgz r
