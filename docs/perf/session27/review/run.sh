#!/usr/bin/env bash
# Session 27, call 5: the review's mend (order_key as one xor, shared by the sampler's first
# pass; the first-index reductions by __reduce_min_sync; fp8x8_to_bf16x8 through bf16x2_bits):
# the CUDA suite, the fixtures, memcheck of the sampler's and the mid-shape tests, and
# `sample_rows` at batch 64 against call 3's and 4's 1.189 ms.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 sample_kernel mid_shape > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
timeout 40 $C/dllm bench kernels --preset mini --device cuda --block 32 --prefix 1024 --batch 64 --steps 4 --temperature 0.7 --top-p 0.9 > $R/k-sampled-b64.txt 2>&1
grep -h "sample_rows\|sum of\|rror" $R/k-sampled-b64.txt
cd $OUT && tar czf r.tgz r
