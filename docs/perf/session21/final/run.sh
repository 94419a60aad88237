#!/usr/bin/env bash
# Session 21, last call (two binaries, stripped to fit the carry: dllm is the working tree with
# the down GEMMs' routing weights read once a row / with the unit's first chunk; dllm_base is
# 043ca00, the last commit). First the tests of the new build, then the A/B of the two
# (interleaved), then every line of issue 13 on the new build.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match mid_shape_fp8_ops cuda_graph_replay > $R/memcheck-moe.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-moe.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck-moe.txt
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  for b in dllm dllm_base; do
    timeout 80 $C/$b bench step $M --prefix 1024 --steps 8 --batch 1,4,16,64,128 > $R/step-1k-$b-$i.txt 2>&1
  done
done
for b in dllm dllm_base; do
  timeout 60 $C/$b bench prefill $M --prompt-len 4096 --batch 1,8 > $R/prefill-4096-$b.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-120
for bt in 1 64 128; do
  for b in dllm dllm_base; do
    timeout 40 $C/$b bench kernels $M --prefix 1024 --batch $bt --steps 4 > $R/k-b$bt-$b.txt 2>&1
  done
done
grep -H "moe_gate_up\|moe_down\|sum of" $R/k-*.txt | sed 's|.*/r/||'
for i in 1 2; do
  timeout 60 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1,8 > $R/step-32k-$i.txt 2>&1
done
timeout 120 $C/dllm bench prefill $M --prompt-len 32736 --batch 1,8 > $R/prefill-32736.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/step-32k-*.txt $R/prefill-32736.txt | sed 's|.*/r/||' | cut -c1-120
S="bench step $M --prefix 1024 --steps 8 --batch 1,16,64"
for i in 1 2; do
  timeout 60 $C/dllm $S > $R/step-greedy-$i.txt 2>&1
  timeout 60 $C/dllm $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-greedy-*.txt $R/step-sampled-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 90 $C/dllm bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate-mini-64.txt 2>&1
tail -2 $R/generate-mini-64.txt
timeout 120 $C/dllm bench step --preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16 > $R/step-flash-fp8.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/step-flash-fp8.txt | sed 's|.*/r/||' | cut -c1-110
cd $OUT && tar czf r.tgz r
