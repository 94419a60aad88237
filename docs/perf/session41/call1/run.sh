#!/usr/bin/env bash
# Session 41's plan, call 1 (not run in session 41: no device was lent). `dllm` and the test
# binaries: HEAD with next-x-codes-in-norm.patch (session 40), ra-tile-pipeline.patch and
# quantize-rows-vec.patch applied; `dllm-base`: HEAD without them (tools/carry-ab.sh). The suite
# (with dense_routing_w8a8_lockstep_matches_cpu and fp8_shared_expert_loads_as_its_dequantized_weights,
# new, w8a8_ops_match_cpu's norm-then-ffn case, and the quantize kernel's bit-for-bit test over the
# vectorized loads) and memcheck of w8a8_ops_match_cpu and the quantize test; mini fp8 at batch 8-64
# (W8A8) patched against base, interleaved, twice; `bench kernels` both ways at batch 16 and 64 as
# W8A8 (quantize_rows_fp8's row: the vectorized kernel, and one launch a layer with x's codes from
# the norm) and as W8A16 (`--fp8-activations false`: the register tiles, whose pipeline fold changed
# their SASS: 32 fewer instructions of 1,913, 242 registers either way).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/device-suite.sh "$R" w8a8_ops_match_cpu fp8_quantize_rows_kernel_matches_host_bit_for_bit
grep -h "W8A8\|quantize_rows\|moe ffn.*FAIL\|panicked" $R/cuda-tests.txt | head -20
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do
  for bin in dllm dllm-base; do
    timeout 100 $C/$bin bench step --preset mini --quantization fp8 $B --batch 8,16,32,64 > $R/m-$bin-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/m-*.txt | sed 's|.*/r/||' | cut -c1-100
pack
K="--preset mini --quantization fp8 --device cuda --prefix 1024"
for b in 16 64; do
  for bin in dllm dllm-base; do
    timeout 100 $C/$bin bench kernels $K --batch $b > $R/k-a8-$bin-b$b.txt 2>&1
    timeout 100 $C/$bin bench kernels $K --batch $b --fp8-activations false > $R/k-ra-$bin-b$b.txt 2>&1
  done
done
grep -H "moe_g\|moe_d\|quantize\|rror" $R/k-*.txt | sed 's|.*/r/||' | head -30
pack
