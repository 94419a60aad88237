#!/usr/bin/env bash
# Session 40, call 2: W8A8 fp8 experts (CudaOptions::fp8_activations, `--fp8-activations`): the
# 64-row items' x and act quantized per row and 128 columns (quantize_rows_fp8) and multiplied by
# the codes on fp8 wgmma (moe_gemm_wgmma_w8a8). Also call 1's patch without its widening change
# (the register tiles' down waiting for its item). The suite (w8a8_ops_match_cpu,
# fp8_quantize_rows_kernel_matches_host_bit_for_bit new) and memcheck of the W8A8 test; mini fp8
# at batch 8 (W8A8 with 64-row items forced), 16, 32, 64 W8A8 against W8A16 (the rule's tiles),
# interleaved, twice; W8A16 with --item-wait false; bf16 beside; bench kernels at batch 16 and 64
# both ways; flash fp8 at batch 8 and 16 both ways.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/device-suite.sh "$R" w8a8_ops_match_cpu
grep -h "W8A8\|quantize_rows\|moe ffn.*FAIL\|panicked" $R/cuda-tests.txt | head -20
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do
  timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 8,16,32,64 --fp8-activations true --moe-item-rows 64 > $R/m-a8-$i.txt 2>&1
  timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 8,16,32,64 > $R/m-a16-$i.txt 2>&1
done
timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 16,32,64 --item-wait false > $R/m-a16-end.txt 2>&1
timeout 120 $C/dllm bench step --preset mini $B --batch 16,32,64 > $R/m-bf16.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/m-*.txt | sed 's|.*/r/||' | cut -c1-100
pack
K="--preset mini --quantization fp8 --device cuda --prefix 1024"
for b in 16 64; do
  timeout 120 $C/dllm bench kernels $K --batch $b --fp8-activations true > $R/k-a8-b$b.txt 2>&1
  timeout 120 $C/dllm bench kernels $K --batch $b > $R/k-a16-b$b.txt 2>&1
done
grep -H "moe_g\|moe_d\|quantize\|rror" $R/k-*.txt | sed 's|.*/r/||' | head -20
pack
for i in 1 2; do
  timeout 120 $C/dllm bench step --preset flash --quantization fp8 $B --batch 8,16 --fp8-activations true --moe-item-rows 64 > $R/f-a8-$i.txt 2>&1
  timeout 120 $C/dllm bench step --preset flash --quantization fp8 $B --batch 8,16 > $R/f-a16-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/f-*.txt | sed 's|.*/r/||' | cut -c1-100
pack
