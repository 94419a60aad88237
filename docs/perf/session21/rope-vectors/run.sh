#!/usr/bin/env bash
# Session 21, call 2: qk_norm_rope_store in its vector form (head dims 128 / 256) against the
# scalar kernel (--rope-vectors false), one binary, interleaved; tests and memcheck of the
# shapes that run it (mid: head dim 128, wide: 256), bench kernels rows, and more sampled
# against greedy runs at batch 16 (the sampler's skip of unmasked rows, call 1).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match wide_heads_ops cuda_graph_replay > $R/memcheck-rope.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-rope.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck-rope.txt
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  for v in true false; do
    timeout 80 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,16,64,128 --rope-vectors $v > $R/step-1k-$v-$i.txt 2>&1
    timeout 60 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1,8 --rope-vectors $v > $R/step-32k-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-110
for v in true false; do
  timeout 120 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 --rope-vectors $v > $R/prefill-4096-$v.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/prefill-4096-*.txt | sed 's|.*/r/||' | cut -c1-120
for b in 1 64; do
  for v in true false; do
    timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch $b --steps 4 --rope-vectors $v > $R/k-b$b-$v.txt 2>&1
  done
done
grep -H "qk_norm_rope\|sum of" $R/k-*.txt | sed 's|.*/r/||'
S="bench step $M --prefix 1024 --steps 8 --batch 16,64"
for i in 1 2 3; do
  timeout 60 $C/dllm $S > $R/step-greedy-$i.txt 2>&1
  timeout 60 $C/dllm $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-greedy-*.txt $R/step-sampled-*.txt | sed 's|.*/r/||' | cut -c1-110
cd $OUT && tar czf r.tgz r
