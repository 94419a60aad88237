#!/usr/bin/env bash
# Session 40, call 4: 94a10d8 (W8A8 on by default from 8 rows an expert). The suite (the older
# fp8 tests as W8A16, the W8A8 tests) and memcheck of the W8A8 and the quantize-rows tests; mini
# fp8 at batch 1-64 and flash fp8 at batch 1-16 by default, twice, against --fp8-activations false,
# interleaved; mini bf16 beside; bench kernels of mini fp8 at batch 16 and 64.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/device-suite.sh "$R" w8a8_ops_match_cpu fp8_quantize_rows_kernel_matches_host_bit_for_bit
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do
  timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 1,4,8,16,32,64 > $R/m-fp8-$i.txt 2>&1
  [ $i = 1 ] && timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 1,4,8,16,32,64 --fp8-activations false > $R/m-fp8-a16.txt 2>&1
done
timeout 120 $C/dllm bench step --preset mini $B --batch 1,4,8,16,32,64 > $R/m-bf16.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/m-*.txt | sed 's|.*/r/||' | cut -c1-110
pack
for i in 1 2; do
  timeout 150 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1,4,8,16 > $R/f-fp8-$i.txt 2>&1
  [ $i = 1 ] && timeout 150 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1,4,8,16 --fp8-activations false > $R/f-fp8-a16.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/f-*.txt | sed 's|.*/r/||' | cut -c1-110
pack
for b in 16 64; do
  timeout 120 $C/dllm bench kernels --preset mini --quantization fp8 --device cuda --batch $b --prefix 1024 > $R/k-fp8-b$b.txt 2>&1
done
grep -H "moe_g\|moe_d\|quantize\|rror" $R/k-*.txt | sed 's|.*/r/||' | head
pack
