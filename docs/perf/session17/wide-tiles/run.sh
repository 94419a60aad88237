#!/usr/bin/env bash
# Session 17, call 1: the wide bf16 expert tiles (two warpgroups a CTA over one x tile, one CTA an
# SM, wgmmas a step behind the copies) against the one-warpgroup tiles, same binary, interleaved:
# correctness first (every item size, wide included), then steps and per-kernel times.
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
    timeout 110 $C/dllm $S --moe-wide-tiles $w > $R/step-$w-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
for b in 16 64; do
  for w in true false; do
    timeout 60 $C/dllm bench kernels --preset mini --device cuda --batch $b --prefix 1024 --steps 4 --moe-wide-tiles $w > $R/k-b$b-$w.txt 2>&1
    grep -H "moe_\|sum of" $R/k-b$b-$w.txt | sed 's|.*/r/||' | cut -c1-120
  done
done
cd $OUT && tar czf r.tgz r
