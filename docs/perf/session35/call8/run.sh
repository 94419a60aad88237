#!/usr/bin/env bash
# Session 35, call 8: the final review's commit (linear_to_add / ffn_to_add shared by the trait's
# defaults and the CUDA fallbacks; behaviour unchanged): CUDA suite, fixtures, memcheck of the
# mid-shape test, one batch-64 and one prefill run.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 150 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 100 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,64 > $R/step.txt 2>&1
timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill.txt 2>&1
grep -h "^ *[0-9]" $R/step.txt $R/prefill.txt | cut -c1-120
cd $OUT && tar czf r.tgz r
