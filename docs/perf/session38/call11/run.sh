#!/usr/bin/env bash
# Session 38, call 11: the final review (the counters' release in one helper, release_count,
# beside wait_count; comments). Its SASS differs from 328ac18's only in register numbering, so
# the CUDA suite and fixtures, and flash fp8 batch 1 and mini bf16 batch 1 once each.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
pack
B="--device cuda --block 32 --prefix 1024 --steps 8 --batch 1"
timeout 90 $C/dllm bench step --preset flash --quantization fp8 $B > $R/flash-fp8.txt 2>&1
timeout 90 $C/dllm bench step --preset mini $B > $R/mini.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/flash-fp8.txt $R/mini.txt | sed 's|.*/r/||' | cut -c1-120
pack
