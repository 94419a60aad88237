#!/usr/bin/env bash
# Planned for the next session's first device call (not run in session 39): next-fp8-ra.patch
# applied and built here (git apply docs/perf/session39/next-fp8-ra.patch; bash tools/gpu-test.sh;
# strip and gzip as the README says). The suite and memcheck of the fp8 tests; mini fp8 at batch
# 16, 32, 64 with down waiting for its item (the patch's default) and for gate_up's end
# (--item-wait false), interleaved, twice; bench kernels at batch 16 and 64 (against call 1's gate_up
# 5.240 and down 3.535 ms a step at 64: the patch's widening under the products has no switch);
# flash fp8 at batch 16 twice. Then planned-ncu.sh in a call of its own.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/device-suite.sh "$R" mid_shape_fp8_ops_match_cpu small_items_long_k_match_cpu
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do
  timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 16,32,64 > $R/m-wait-$i.txt 2>&1
  timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 16,32,64 --item-wait false > $R/m-end-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/m-*.txt | sed 's|.*/r/||' | cut -c1-100
pack
for b in 16 64; do
  timeout 120 $C/dllm bench kernels --preset mini --quantization fp8 --device cuda --batch $b --prefix 1024 > $R/k-b$b.txt 2>&1
done
grep -H "moe_g\|moe_d\|rror" $R/k-*.txt | sed 's|.*/r/||' | head
for i in 1 2; do timeout 120 $C/dllm bench step --preset flash --quantization fp8 $B --batch 16 > $R/f-$i.txt 2>&1; done
grep -H "^ *[0-9]\|rror" $R/f-*.txt | sed 's|.*/r/||' | cut -c1-100
pack
