#!/usr/bin/env bash
# Session 37, call 6: commit 80b54f1 (the fp8 16-row tiles with the shared expert among their
# items; fp8 64-row items from 24 rows an expert). The CUDA suite and fixtures; flash fp8 at
# batch 1, 4, 16 and mini fp8 and bf16 at 1, 4, 16, 32, 64 side by side (two runs each); then
# the fp8 tiles' stages and CTAs an SM in two more builds (4 stages / 2 CTAs, 5 / 2; the
# commit's 3 / 3) on flash fp8 at batch 1 and 4, interleaved, two runs each.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures dllm-st4c2 dllm-st5c2; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do
  timeout 90 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1,4,16 > $R/flash-fp8-$i.txt 2>&1
  timeout 90 $C/dllm bench step --preset mini --quantization fp8 $B --batch 1,4,16,32,64 > $R/mini-fp8-$i.txt 2>&1
  timeout 90 $C/dllm bench step --preset mini $B --batch 1,4,16,32,64 > $R/mini-bf16-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/flash-fp8-*.txt $R/mini-*.txt | sed 's|.*/r/||' | cut -c1-110
pack
for i in 1 2; do for v in dllm dllm-st4c2 dllm-st5c2; do
  timeout 60 $([ $v = dllm ] && echo $C || echo /tmp)/$v bench step --preset flash --quantization fp8 $B --batch 1,4 > $R/stages-$v-$i.txt 2>&1
done; done
grep -H "^ *[0-9]\|rror" $R/stages-*.txt | sed 's|.*/r/||' | cut -c1-110
grep -l "rror\|panic" $R/*.txt
pack
