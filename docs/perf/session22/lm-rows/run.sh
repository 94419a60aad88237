#!/usr/bin/env bash
# Session 22, call 1: dllm is 56c8cd6 (a step's lm_head over the rows still masked, padded to
# OUT_ROWS_STEP buckets); dllm_base is the build of session 21's last code (f9ba028 / 006a3cb,
# every block row through the lm_head). The tests of the new build, then the A/B, interleaved.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
grep -h "CUDA graphs:" $R/cuda-tests.txt
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 cuda_graph_replay sample_kernel > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
G="bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128"
for i in 1 2; do
  for b in dllm dllm_base; do
    timeout 80 $C/$b bench step $M --prefix 1024 --steps 8 --batch 1,4,16,64,128 > $R/step-1k-$b-$i.txt 2>&1
    timeout 90 $C/$b $G > $R/generate-$b-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-1k-*.txt | sed 's|.*/r/||' | cut -c1-120
grep -H "tokens/s\|rror" $R/generate-*.txt | sed 's|.*/r/||'
S="bench step $M --prefix 1024 --steps 8 --batch 16,64"
for b in dllm dllm_base; do
  timeout 60 $C/$b $S > $R/step-greedy-$b.txt 2>&1
  timeout 60 $C/$b $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-$b.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-greedy-*.txt $R/step-sampled-*.txt | sed 's|.*/r/||' | cut -c1-110
for b in dllm dllm_base; do
  timeout 40 $C/$b bench kernels $M --prefix 1024 --batch 64 --steps 4 > $R/k-b64-$b.txt 2>&1
done
grep -H "lm_head\|row_argmax\|sum of" $R/k-*.txt | sed 's|.*/r/||'
cd $OUT && tar czf r.tgz r
