#!/usr/bin/env bash
# Session 23, call 4: the deep attention's TMA producer requests the chunks cached before the
# forward ahead of its pdl_wait (--att-early-kv), while qk_norm_rope_store still runs; tiles
# now carry their run's first position. One binary's two settings, interleaved. The whole CUDA
# suite first (the tiles' layout changed for every attention kernel), memcheck, fixtures.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 attention_variants cuda_graph_replay > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for i in 1 2 3; do
  for v in true false; do
    timeout 60 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1,8 --att-early-kv $v > $R/early-32k-$v-$i.txt 2>&1
  done
done
for i in 1 2; do
  for v in true false; do
    timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,16,64 --att-early-kv $v > $R/early-1k-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/early-*.txt | sed 's|.*/r/||' | cut -c1-120
for v in true false; do
  timeout 100 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 --att-early-kv $v > $R/prefill-4096-$v.txt 2>&1
  timeout 60 $C/dllm bench prefill $M --prompt-len 32736 --batch 1 --att-early-kv $v > $R/prefill-32736-$v.txt 2>&1
  timeout 40 $C/dllm bench kernels $M --prefix 32736 --batch 1 --steps 4 --att-early-kv $v > $R/k-32k-b1-$v.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-120
grep -H "block_attention\|attention_combine\|sum of" $R/k-*.txt | sed 's|.*/r/||'
cd $OUT && tar czf r.tgz r
