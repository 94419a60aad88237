#!/usr/bin/env bash
# Session 40, call 1: session 39's next-fp8-ra.patch (the register tiles' first tile's wgmmas
# issued before the second tile's codes are widened; down's register tiles as gate_up's
# programmatic dependent, waiting for their own item) as .carry/dllm, 222e7f6 as .carry/dllm-base.
# The suite and memcheck of the fp8 tests; mini fp8 at batch 16, 32, 64: new, new with
# --item-wait false, base, interleaved, twice; bench kernels at batch 16 (64-row items) and 64,
# new and base; flash fp8 at batch 16, new and base; the bf16 lines on this machine.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/device-suite.sh "$R" mid_shape_fp8_ops_match_cpu small_items_long_k_match_cpu
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do
  timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 16,32,64 > $R/m-new-$i.txt 2>&1
  timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 16,32,64 --item-wait false > $R/m-end-$i.txt 2>&1
  timeout 120 $C/dllm-base bench step --preset mini --quantization fp8 $B --batch 16,32,64 > $R/m-base-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/m-*.txt | sed 's|.*/r/||' | cut -c1-100
pack
K="--preset mini --quantization fp8 --device cuda --prefix 1024"
for bin in dllm dllm-base; do
  timeout 120 $C/$bin bench kernels $K --batch 16 --moe-item-rows 64 > $R/k-$bin-b16.txt 2>&1
  timeout 120 $C/$bin bench kernels $K --batch 64 > $R/k-$bin-b64.txt 2>&1
done
grep -H "moe_g\|moe_d\|rror" $R/k-*.txt | sed 's|.*/r/||' | head -20
pack
for bin in dllm dllm-base dllm; do timeout 120 $C/$bin bench step --preset flash --quantization fp8 $B --batch 16 > $R/f-$bin-$RANDOM.txt 2>&1; done
grep -H "^ *[0-9]\|rror" $R/f-*.txt | sed 's|.*/r/||' | cut -c1-100
timeout 120 $C/dllm bench step --preset mini $B --batch 1,4,16,64 > $R/mini-bf16.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/mini-bf16.txt | sed 's|.*/r/||' | cut -c1-100
pack
