#!/usr/bin/env bash
# Session 18, call 1: moe_route (the router in one launch) against cuBLAS logits +
# moe_router_select + moe_permute, the same binary (--fused-router true|false): the CUDA tests
# (fused_router_matches_cpu forces both ways), memcheck of it, then the mini step interleaved at
# batch 1 (the rule's rows) and, forced, at 4 / 16 / 64 (a cluster per 32 rows, moe_permute
# after), and the per-kernel table at batch 1 and 16 both ways.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 100 $C/test_cuda_kernels --test-threads=1 fused_router mid_shape_ops > $R/router-tests.txt 2>&1; echo "rc=$?" >> $R/router-tests.txt
grep -h "test result\|^rc=\|panicked" $R/router-tests.txt | head -8
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16,64"
for i in 1 2; do
  for f in true false; do timeout 60 $C/dllm $S --fused-router $f > $R/step-$f-$i.txt 2>&1; done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
for b in 1 16; do for f in true false; do
  timeout 60 $C/dllm bench kernels --preset mini --device cuda --batch $b --prefix 1024 --steps 4 --fused-router $f > $R/k-b$b-$f.txt 2>&1
done; done
grep -H "moe_route\|router\|moe_permute\|sum of" $R/k-*.txt | sed 's|.*/r/||'
timeout 150 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked" $R/cuda-tests.txt | head -5
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 fused_router > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY" $R/memcheck-tests.txt
cd $OUT && tar czf r.tgz r
