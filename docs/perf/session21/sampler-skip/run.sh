#!/usr/bin/env bash
# Session 21, call 1: the sampler skips the rows of positions no longer masked (LowConfidence and
# FixedCount never read their picks). Tests (the sampler test now skips every third row of its
# 2,048-row batch), memcheck of the sampler test, sampled against greedy steps interleaved, the
# sampler's row in bench kernels at batch 16 / 64, and ncu durations of a 4,096-token prefill.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|sampler:" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 sample_kernel_matches > $R/memcheck-sampler.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-sampler.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck-sampler.txt
M="--preset mini --device cuda --block 32"
S="bench step $M --prefix 1024 --steps 8 --batch 1,16,64"
for i in 1 2; do
  timeout 60 $C/dllm $S > $R/step-greedy-$i.txt 2>&1
  timeout 60 $C/dllm $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-greedy-*.txt $R/step-sampled-*.txt | sed 's|.*/r/||' | cut -c1-110
for b in 16 64; do
  timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch $b --steps 4 --temperature 0.7 --top-p 0.9 > $R/k-sampled-b$b.txt 2>&1
done
grep -H "sample_rows\|row_argmax\|sum of" $R/k-*.txt | sed 's|.*/r/||'
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
timeout 150 $NCU --metrics gpu__time_duration.sum --csv -k regex:'^(?!init_normal)' --launch-count 1200 \
  $C/dllm bench prefill $M --prompt-len 4096 --batch 1 --repeats 1 --disable-cuda-graph --mem-fraction-static 0.3 > $R/ncu-prefill-4096x1.csv 2>&1
echo "ncu rc=$? lines $(wc -l < $R/ncu-prefill-4096x1.csv)"
timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 > $R/prefill-4096.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/prefill-4096.txt | sed 's|.*/r/||' | cut -c1-120
cd $OUT && tar czf r.tgz r
