#!/usr/bin/env bash
# Session 28, call 4. dllm (this build, its tests): the weights of the GEMM after a latency-bound
# kernel asked of the L2 by that kernel (prefetch_l2): the layer's QKV by its input norm, the
# output projection by the attention's combine. dllm_prev: fb0ab23 (the code before it).
# Then the sampled line measured with more runs: greedy and sampled (temperature 0.7, top-p 0.9)
# steps interleaved, three pairs of 16 steps each, this build.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
for v in dllm_prev test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$v.gz > /tmp/$v && chmod +x /tmp/$v; done
M="--preset mini --device cuda --block 32"
declare -A BIN=([new]="$C/dllm" [prev]="/tmp/dllm_prev")
for i in 1 2; do
  for v in new prev; do
    timeout 90 ${BIN[$v]} bench step $M --prefix 1024 --steps 16 --batch 1,4,16,64 > $R/step-1k-$v-$i.txt 2>&1
    timeout 120 ${BIN[$v]} bench step $M --prefix 32736 --steps 16 --batch 1,8 > $R/step-32k-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-110
for v in new prev; do
  timeout 40 ${BIN[$v]} bench kernels $M --prefix 1024 --batch 1 --steps 4 > $R/k-b1-$v.txt 2>&1
  timeout 60 ${BIN[$v]} bench kernels $M --prefix 32736 --batch 1 --steps 4 > $R/k-32k-b1-$v.txt 2>&1
  timeout 60 ${BIN[$v]} bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-4096-$v.txt 2>&1
done
grep -H "cublas qkv\|attention out\|attention_combine\|add_moe_rms\|add_rms_norm\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-100
grep -H "^ *[0-9]\|rror" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-120
S="bench step $M --prefix 1024 --steps 16 --batch 16,64"
for i in 1 2 3; do
  timeout 60 $C/dllm $S > $R/line-greedy-$i.txt 2>&1
  timeout 60 $C/dllm $S --temperature 0.7 --top-p 0.9 > $R/line-sampled-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/line-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 240 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 mid_shape graph > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
cd $OUT && tar czf r.tgz r
