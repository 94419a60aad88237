#!/usr/bin/env bash
# Session 29, call 1: the 32-row projections (QKV, attention out) by csrc/dense_stream.cu's new
# form (each CTA's whole weight tile asked for at once, before pdl_wait, as a programmatic
# dependent) against cuBLAS, one binary: `--dense-stream` on and off, interleaved. Then the
# CUDA suite (its opts() turn the stream on), the fixtures, memcheck of the stream's test.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
M="--preset mini --device cuda --block 32"
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --batch 1,4 --steps 8 --dense-stream > $R/step-1k-on-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --batch 1,4 --steps 8 > $R/step-1k-off-$i.txt 2>&1
done
for i in 1 2; do
  timeout 90 $C/dllm bench step $M --prefix 32736 --batch 1 --steps 8 --dense-stream > $R/step-32k-on-$i.txt 2>&1
  timeout 90 $C/dllm bench step $M --prefix 32736 --batch 1 --steps 8 > $R/step-32k-off-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch 1 --steps 4 --dense-stream > $R/k-b1-on.txt 2>&1
timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch 1 --steps 4 > $R/k-b1-off.txt 2>&1
head -14 $R/k-b1-on.txt; grep -h "cublas qkv\|cublas attention out\|sum of" $R/k-b1-off.txt
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1
grep -h "test result\|FAILED\|panicked" $R/cuda-tests.txt | head
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; grep -h "test result" $R/fixtures.txt
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels dense_stream_long_k_matches_cpu > $R/memcheck.txt 2>&1
echo "memcheck rc=$?"; grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
cd $OUT && tar czf r.tgz r
