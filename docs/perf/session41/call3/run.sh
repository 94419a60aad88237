#!/usr/bin/env bash
# Session 41's plan, call 3 (not run in session 41): session 40's w8a8-three-ctas.patch (three
# stages, three CTAs an SM, 168 registers with 52-56 bytes of spills) as `dllm` against call 1's
# kept build as `dllm-base`: the suite (the W8A8 tests), then mini fp8 at batch 8-64 and
# `bench kernels` at 16 and 64, interleaved.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/device-suite.sh "$R"
grep -h "W8A8\|panicked" $R/cuda-tests.txt | head -10
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do
  for bin in dllm dllm-base; do
    timeout 100 $C/$bin bench step --preset mini --quantization fp8 $B --batch 8,16,32,64 > $R/m-$bin-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/m-*.txt | sed 's|.*/r/||' | cut -c1-100
K="--preset mini --quantization fp8 --device cuda --prefix 1024"
for b in 16 64; do
  for bin in dllm dllm-base; do
    timeout 100 $C/$bin bench kernels $K --batch $b > $R/k-$bin-b$b.txt 2>&1
  done
done
grep -H "moe_g\|moe_d\|quantize\|rror" $R/k-*.txt | sed 's|.*/r/||' | head -20
pack
