#!/usr/bin/env bash
# Session 36, call 8: the review commit cc34a4a (behaviour unchanged) on the GPU: the CUDA suite,
# fixtures, memcheck of the sampler's test; sampled (temperature 0.7, top-p 0.9) and greedy
# steps at batch 64, and `bench kernels` sampled at 64 (the lm_head's work model).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 170 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 --nocapture sample_kernel_matches_sample_row_u > $R/memcheck-sampler.txt 2>&1
echo "memcheck rc=$?"; grep -h "ERROR SUMMARY\|sampler:" $R/memcheck-sampler.txt
pack
M="--preset mini --device cuda --block 32 --prefix 1024"
S="--temperature 0.7 --top-p 0.9"
timeout 60 $C/dllm bench step $M --steps 8 --batch 64 $S > $R/sampled.txt 2>&1
timeout 60 $C/dllm bench step $M --steps 8 --batch 64 > $R/greedy.txt 2>&1
timeout 60 $C/dllm bench kernels $M --batch 64 $S > $R/k-sampled-b64.txt 2>&1
grep -H "^ *64 " $R/sampled.txt $R/greedy.txt | sed 's|.*/r/||' | cut -c1-100
grep -h "lm_head\|sample_rows" $R/k-sampled-b64.txt | cut -c1-110
grep -l "rror\|panic" $R/*.txt
pack
