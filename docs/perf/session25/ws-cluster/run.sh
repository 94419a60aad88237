#!/usr/bin/env bash
# Session 25: the warp-specialized 128-row expert tiles in thread block clusters of C CTAs
# (--moe-ws-cluster C; 2 by default in this build, 1 = none): an item is up to C x 128 rows of
# one expert, each CTA takes an even share of them, and each stage's weight tile is read from
# the L2 once for the cluster (TMA multicast). The mid-shape test first (every size), one
# binary's three settings interleaved (steps at batch 64 and 128, kernels, prefill, generate),
# then the whole CUDA suite, the fixtures and memcheck of the mid-shape test. Call 1 (call1/)
# ran the clustered tiles with cluster-scope release arrivals (a MEMBAR.ALL.GPU each): 2.1x and
# 4.5x slower; call 2 with CTA-scope ones.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 90 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu > $R/mid-test.txt 2>&1; echo "rc=$?" >> $R/mid-test.txt
grep -h "test result\|^rc=\|panicked" $R/mid-test.txt
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  for v in 2 4 1; do
    timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64,128 --moe-ws-cluster $v > $R/step-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-120
for v in 2 4 1; do
  for b in 64 128; do
    timeout 40 $C/dllm bench kernels $M --prefix 1024 --batch $b --steps 4 --moe-ws-cluster $v > $R/k-b$b-$v.txt 2>&1
  done
done
grep -H "moe_\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-130
for v in 2 4 1; do
  timeout 100 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 --moe-ws-cluster $v > $R/prefill-4096-$v.txt 2>&1
done
for v in 2 4 1; do
  timeout 60 $C/dllm bench prefill $M --prompt-len 32736 --batch 1 --moe-ws-cluster $v > $R/prefill-32736-$v.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-120
for v in 2 1; do
  timeout 90 $C/dllm bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 --moe-ws-cluster $v > $R/generate-$v.txt 2>&1
done
grep -H "tok/s\|tokens/s\|rror" $R/generate-*.txt | sed 's|.*/r/||' | cut -c1-160
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
cd $OUT && tar czf r.tgz r
