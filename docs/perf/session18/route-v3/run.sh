#!/usr/bin/env bash
# Session 18, call 4: moe_route with contiguous k ranges a CTA, the bias staged with the first
# stage, the sigmoid's reciprocal without the division's branch, the group shuffles of all
# registers interleaved, and launched as a programmatic dependent of the norm before it (its
# weight loads before pdl_wait): the router tests (and memcheck of them), the batch-1 kernel table
# and steps both ways, and the phases' clock64 cycles of one launch (dllm_trace: the same code
# with timestamps, not committed; its first phase includes the wait for the norm).
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 100 $C/test_cuda_kernels --test-threads=1 fused_router mid_shape_ops > $R/router-tests.txt 2>&1; echo "rc=$?" >> $R/router-tests.txt
grep -h "test result\|^rc=\|panicked" $R/router-tests.txt | head -8
timeout 60 $C/dllm_trace bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 2 --batch 1 --disable-cuda-graph 2>&1 | grep "route call" > $R/trace-b1.txt
head -8 $R/trace-b1.txt | cut -c1-200
for f in true false; do
  timeout 60 $C/dllm bench kernels --preset mini --device cuda --batch 1 --prefix 1024 --steps 4 --fused-router $f > $R/k-b1-$f.txt 2>&1
done
grep -H "moe_route\|router\|moe_permute\|sum of" $R/k-*.txt | sed 's|.*/r/||'
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16"
for i in 1 2; do
  for f in true false; do timeout 60 $C/dllm $S --fused-router $f > $R/step-$f-$i.txt 2>&1; done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-70
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 fused_router > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY" $R/memcheck-tests.txt
cd $OUT && tar czf r.tgz r
