#!/usr/bin/env bash
# Session 39, call 1: fp8 experts' 64-row items on the tiles that widen the codes in registers as
# wgmma's A operand (moe_gemm_wgmma_fp8_ra). The CUDA suite and fixtures; memcheck of the fp8
# mid-shape test; mini fp8 at batch 16, 32, 64 with the new tiles on and off, interleaved, twice;
# 64-row items forced at mini's batch 16 and flash's batch 16 and 4; bench kernels of mini fp8
# at batch 64, on and off.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do
  timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 16,32,64 > $R/m-on-$i.txt 2>&1
  timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 16,32,64 --fp8-codes-in-registers false > $R/m-off-$i.txt 2>&1
done
timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 16 --moe-item-rows 64 > $R/m-b16-m64.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/m-*.txt | sed 's|.*/r/||' | cut -c1-120
pack
timeout 120 $C/dllm bench step --preset flash --quantization fp8 $B --batch 4,16 > $R/f-default.txt 2>&1
timeout 120 $C/dllm bench step --preset flash --quantization fp8 $B --batch 4,16 --moe-item-rows 64 > $R/f-m64.txt 2>&1
timeout 120 $C/dllm bench step --preset flash --quantization fp8 $B --batch 16 --moe-item-rows 64 --fp8-codes-in-registers false > $R/f-m64-off.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/f-*.txt | sed 's|.*/r/||' | cut -c1-120
pack
timeout 120 $C/dllm bench kernels --preset mini --quantization fp8 --device cuda --batch 64 --prefix 1024 > $R/k-on-b64.txt 2>&1
timeout 120 $C/dllm bench kernels --preset mini --quantization fp8 --device cuda --batch 64 --prefix 1024 --fp8-codes-in-registers false > $R/k-off-b64.txt 2>&1
grep -h "moe_\|rror" $R/k-*.txt | head -12
pack
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 mid_shape_fp8_ops_match_cpu > $R/memcheck-fp8-mid.txt 2>&1
echo "memcheck rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-fp8-mid.txt
pack
