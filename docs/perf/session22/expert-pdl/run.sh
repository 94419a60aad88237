#!/usr/bin/env bash
# Session 22, call 2: dllm is the working tree after 56c8cd6: the lm_head's rows in buckets of
# 128 (a sixteenth of the tokens where more), `bench step` recording every step shape in an
# untimed pass first, and the down weight streams as programmatic dependents of gate_up's
# (--expert-pdl, on by default). dllm_base is session 21's last build (every block row through
# the lm_head). Tests first, then the PDL A/B (one binary, interleaved), then the lm_head A/B.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 cuda_graph_replay mid_shape_ops_match > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  for v in true false; do
    timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4 --expert-pdl $v > $R/pdl-1k-$v-$i.txt 2>&1
    timeout 60 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1 --expert-pdl $v > $R/pdl-32k-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/pdl-*.txt | sed 's|.*/r/||' | cut -c1-120
for v in true false; do
  timeout 120 $C/dllm bench step --preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1 --expert-pdl $v > $R/pdl-flash-fp8-$v.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/pdl-flash-*.txt | sed 's|.*/r/||' | cut -c1-120
G="bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128"
for i in 1 2; do
  for b in dllm dllm_base; do
    timeout 80 $C/$b bench step $M --prefix 1024 --steps 8 --batch 16,64,128 > $R/step-1k-$b-$i.txt 2>&1
    timeout 90 $C/$b $G > $R/generate-$b-$i.txt 2>&1
    timeout 60 $C/$b bench step $M --prefix 1024 --steps 8 --batch 16,64 --temperature 0.7 --top-p 0.9 > $R/step-sampled-$b-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-120
grep -H "tokens/s\|rror" $R/generate-*.txt | sed 's|.*/r/||'
cd $OUT && tar czf r.tgz r
