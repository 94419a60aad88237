#!/usr/bin/env bash
# Session 17, call 4: the persistent warp-specialized bf16 expert tiles (TMA weights, two consumer
# warpgroups and a producer warp, one CTA an SM) against the one-warpgroup tiles, same binary,
# interleaved: correctness first (every item size, the new tiles included; memcheck), then steps
# and per-kernel times.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 120 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu > $R/mid-test.txt 2>&1; echo "rc=$?" >> $R/mid-test.txt
grep -h "test result\|^rc=\|FAILED\|panicked" $R/mid-test.txt | head -8
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16,64,128"
for i in 1 2; do
  for w in true false; do
    timeout 110 $C/dllm $S --moe-ws-tiles $w > $R/step-$w-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
for b in 16 64 128; do
  for w in true false; do
    timeout 60 $C/dllm bench kernels --preset mini --device cuda --batch $b --prefix 1024 --steps 4 --moe-ws-tiles $w > $R/k-b$b-$w.txt 2>&1
    grep -H "moe_gate\|moe_down\|sum of\|rror" $R/k-b$b-$w.txt | sed 's|.*/r/||' | cut -c1-120
  done
done
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu > $R/memcheck-mid.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-mid.txt
grep -h "ERROR SUMMARY" $R/memcheck-mid.txt
cd $OUT && tar czf r.tgz r
