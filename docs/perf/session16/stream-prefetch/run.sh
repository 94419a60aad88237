#!/usr/bin/env bash
# Session 16, call 4: the expert weight streams hinting each warp's weight lines into L2 a few of
# its chunks ahead (MoeGemmParams::prefetch_ahead). Tests with the default (2), memcheck, then
# flash with fp8 experts (the streams at batch 1 and 4), mini fp8 and flash TP2's rank-0 bf16
# streams, --stream-prefetch 0 / 2 / 4 in the same binary, interleaved.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 100 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked" $R/cuda-tests.txt | head -5
F="bench step --preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4"
for i in 1 2; do
  for a in 0 2 4; do
    timeout 120 $C/dllm $F --stream-prefetch $a > $R/step-flash-fp8-a$a-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]" $R/step-flash-*.txt | sed 's|.*/r/||' | cut -c1-100
for a in 0 2 4; do
  timeout 120 $C/dllm bench kernels --preset flash --quantization fp8 --device cuda --batch 1 --prefix 1024 --steps 4 --stream-prefetch $a > $R/k-flash-fp8-b1-a$a.txt 2>&1
  timeout 120 $C/dllm bench kernels --preset flash --tp-size 2 --device cuda --batch 1 --prefix 1024 --steps 4 --stream-prefetch $a > $R/k-flash-tp2r0-b1-a$a.txt 2>&1
done
grep -H "stream\|sum of" $R/k-flash-*.txt | sed 's|.*/r/||' | cut -c1-120
M="bench step --preset mini --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4"
for a in 0 2; do
  timeout 90 $C/dllm $M --stream-prefetch $a > $R/step-mini-fp8-a$a.txt 2>&1
done
grep -H "^ *[0-9]" $R/step-mini-*.txt | sed 's|.*/r/||' | cut -c1-100
timeout 240 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu mid_shape_fp8_ops_match_cpu > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY" $R/memcheck-tests.txt
cd $OUT && tar czf r.tgz r
