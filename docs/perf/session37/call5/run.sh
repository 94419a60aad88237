#!/usr/bin/env bash
# Session 37, call 5: the shared expert (bf16) among the fp8 16-row tiles' items, its CTAs on
# bf16 weights. The CUDA suite and fixtures; memcheck of small_items_long_k_match_cpu and of the
# fp8 mid-shape test (the shared expert among the fp8 tiles' items); flash fp8 at batch 1 and 4
# and mini fp8 at 1, 4, 16, each against `--shared-expert-items 0` (the shared expert beside,
# cuBLAS), interleaved, two runs each; then mini fp8 at 16 and 32 with 16-row items forced
# (the rule's threshold), and `bench kernels` of flash fp8 at batch 1.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
for t in small_items_long_k_match_cpu mid_shape_fp8_ops_match_cpu; do
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 $t > $R/memcheck-$t.txt 2>&1
  echo "memcheck $t rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-$t.txt
done
pack
F="--preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4"
M="--preset mini --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16"
for i in 1 2; do
  timeout 90 $C/dllm bench step $F > $R/flash-in-$i.txt 2>&1
  timeout 90 $C/dllm bench step $F --shared-expert-items 0 > $R/flash-beside-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M > $R/mini-in-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --shared-expert-items 0 > $R/mini-beside-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/flash-*.txt $R/mini-*.txt | sed 's|.*/r/||' | cut -c1-110
pack
for i in 1 2; do
  timeout 60 $C/dllm bench step --preset mini --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 16,32 > $R/mini-rule-b32-$i.txt 2>&1
  timeout 60 $C/dllm bench step --preset mini --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 16,32 --moe-item-rows 16 > $R/mini-m16-b32-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/mini-*b32*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 60 $C/dllm bench kernels --preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --batch 1 > $R/k-flash-fp8-b1.txt 2>&1
grep -h "moe_\|mlp\|silu\|sum of\|rror" $R/k-flash-fp8-b1.txt | cut -c1-110
grep -l "rror\|panic" $R/*.txt
pack
