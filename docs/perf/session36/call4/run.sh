#!/usr/bin/env bash
# Session 36, call 4: the sampler's clusters of 4 CTAs a row (SAMPLE_CLUSTER 4, SAMPLE_CANDIDATES
# 2048), on e110080 (the shared expert among the warp-specialized items) and 973c60d (a sampled
# step's logits in bf16). The CUDA suite and fixtures, memcheck of the sampler's test; sampled
# (temperature 0.7, top-p 0.9) against greedy steps at batch 16 and 64, four pairs interleaved;
# `bench kernels` sampled at 16 and 64; then the lines: steps at 1k and 32k, the prefills, and
# `bench generate`.
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
M="--preset mini --device cuda --block 32"
P="--prefix 1024"
S="--temperature 0.7 --top-p 0.9"
for i in 1 2 3 4; do
  timeout 60 $C/dllm bench step $M $P --steps 8 --batch 16,64 $S > $R/sampled-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M $P --steps 8 --batch 16,64 > $R/greedy-$i.txt 2>&1
done
grep -H "^ *\(16\|64\) " $R/sampled-*.txt $R/greedy-*.txt | sed 's|.*/r/||' | cut -c1-80
for b in 16 64; do
  timeout 60 $C/dllm bench kernels $M $P --batch $b $S > $R/k-sampled-b$b.txt 2>&1
  grep -h "sample_rows\|lm_head\|sum of" $R/k-sampled-b$b.txt | cut -c1-100
done
pack
for i in 1 2; do
  timeout 60 $C/dllm bench step $M $P --steps 8 --batch 1,4,8,16,64,128 > $R/step-$i.txt 2>&1
  timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1,8 > $R/step-32k-$i.txt 2>&1
done
timeout 150 $C/dllm bench prefill $M --prompt-len 4096,32736 --batch 1,8 > $R/prefill.txt 2>&1
timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-4096-2.txt 2>&1
for i in 1 2; do
  timeout 60 $C/dllm bench generate $M --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate-$i.txt 2>&1
done
grep -H "^ *[0-9]\|tokens/s" $R/step-*.txt $R/prefill*.txt $R/generate-*.txt | sed 's|.*/r/||' | cut -c1-130
grep -l "rror\|panic" $R/*.txt
pack
