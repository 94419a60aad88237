#!/usr/bin/env bash
# Session 40, call 3: W8A8 (call 2's build; the test binary rebuilt with
# mini_shape_fp8_vs_bf16_logits measuring W8A8 too) at batch 1 and 4, where the rule takes 16-row
# items (W8A16 fp8 tiles): 64-row W8A8 items forced against the default, mini and flash,
# interleaved, twice; the accuracy test.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
gunzip -c $C/test_cuda_kernels.gz > /tmp/t && chmod +x /tmp/t
timeout 120 /tmp/t --test-threads=1 --nocapture mini_shape_fp8_vs_bf16_logits > $R/accuracy.txt 2>&1; echo "rc=$?" >> $R/accuracy.txt
grep -h "relative error\|test result\|rc=" $R/accuracy.txt
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do
  timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 1,4 --fp8-activations true --moe-item-rows 64 > $R/m-a8-$i.txt 2>&1
  timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 1,4 > $R/m-a16-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/m-*.txt | sed 's|.*/r/||' | cut -c1-100
pack
for i in 1 2; do
  timeout 120 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1,4 --fp8-activations true --moe-item-rows 64 > $R/f-a8-$i.txt 2>&1
  timeout 120 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1,4 > $R/f-a16-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/f-*.txt | sed 's|.*/r/||' | cut -c1-100
pack
