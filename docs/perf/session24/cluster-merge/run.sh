#!/usr/bin/env bash
# Session 24: block_attention_deep merges a tile's key splits itself, as thread block clusters
# through their shared memory (--att-cluster-merge, now the default; several clusters a tile:
# the last arrival merges theirs), instead of attention_combine. The whole CUDA suite with it on
# (attention_variants runs every deep way both ways: one cluster of 8 and of 16 splits, four of
# 16), the fixtures, memcheck; then one binary's two settings, interleaved.
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
for i in 1 2; do
  for v in true false; do
    timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,16,64,128 --att-cluster-merge $v > $R/cm-1k-$v-$i.txt 2>&1
    timeout 60 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1,8 --att-cluster-merge $v > $R/cm-32k-$v-$i.txt 2>&1
  done
done
for v in true false; do
  timeout 60 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1 --att-cluster-merge $v > $R/cm-32k-$v-3.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/cm-*.txt | sed 's|.*/r/||' | cut -c1-120
for v in true false; do
  for b in 1 16; do
    timeout 40 $C/dllm bench kernels $M --prefix 1024 --batch $b --steps 4 --att-cluster-merge $v > $R/k-b$b-$v.txt 2>&1
  done
  timeout 40 $C/dllm bench kernels $M --prefix 32736 --batch 1 --steps 4 --att-cluster-merge $v > $R/k-32k-b1-$v.txt 2>&1
  timeout 40 $C/dllm bench kernels $M --prefix 32736 --batch 8 --steps 4 --att-cluster-merge $v > $R/k-32k-b8-$v.txt 2>&1
done
grep -H "block_attention\|attention_combine\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||'
for v in true false; do
  timeout 90 $C/dllm bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 --att-cluster-merge $v > $R/generate-$v.txt 2>&1
done
grep -H "tok/s\|tokens/s\|rror" $R/generate-*.txt | sed 's|.*/r/||' | cut -c1-160
timeout 100 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 > $R/prefill-4096.txt 2>&1
timeout 60 $C/dllm bench prefill $M --prompt-len 32736 --batch 1 > $R/prefill-32736.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-120
cd $OUT && tar czf r.tgz r
