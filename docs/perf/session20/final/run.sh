#!/usr/bin/env bash
# Session 20, last call (the landed code: d4387a7's add_moe_rms_norm, built from the session's
# last commit): tests, then every line of issue 13 (steps at 1k and 32k, prefill, sampled
# against greedy, bench generate) and flash with fp8 experts on one H200.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  timeout 80 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,16,64,128 > $R/step-1k-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1,8 > $R/step-32k-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 150 $C/dllm bench prefill $M --prompt-len 4096,32736 --batch 1,8 > $R/prefill.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/prefill.txt | sed 's|.*/r/||' | cut -c1-120
S="bench step $M --prefix 1024 --steps 8 --batch 1,16,64"
for i in 1 2; do
  timeout 60 $C/dllm $S > $R/step-greedy-$i.txt 2>&1
  timeout 60 $C/dllm $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-greedy-*.txt $R/step-sampled-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 150 $C/dllm bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate-mini-64.txt 2>&1
tail -2 $R/generate-mini-64.txt
timeout 150 $C/dllm bench step --preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16 > $R/step-flash-fp8.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/step-flash-fp8.txt | sed 's|.*/r/||' | cut -c1-110
cd $OUT && tar czf r.tgz r
