#!/usr/bin/env bash
# Session 18, last call (final code, 017ad27s moe_route): the whole CUDA
# test suite, the fixtures, memcheck of the router, mid-shape and graph-replay tests (the graph
# holds moe_route's programmatic edge); the batch-1 kernel table both ways; the mini step by the
# rule (moe_route at up to 32 rows: batch 1) against --fused-router false, interleaved, two runs.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 150 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked" $R/cuda-tests.txt | head -5
for f in true false; do
  timeout 60 $C/dllm bench kernels --preset mini --device cuda --batch 1 --prefix 1024 --steps 4 --fused-router $f > $R/k-b1-$f.txt 2>&1
done
grep -H "moe_route\|router\|moe_permute\|sum of" $R/k-*.txt | sed 's|.*/r/||'
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16,64,128"
for i in 1 2; do
  timeout 80 $C/dllm $S > $R/step-rule-$i.txt 2>&1
  timeout 80 $C/dllm $S --fused-router false > $R/step-false-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-70
timeout 60 $C/dllm bench step --preset mini --device cuda --block 32 --prefix 32736 --steps 4 --batch 1 > $R/step-long-rule.txt 2>&1
timeout 60 $C/dllm bench step --preset mini --device cuda --block 32 --prefix 32736 --steps 4 --batch 1 --fused-router false > $R/step-long-false.txt 2>&1
grep -H "^ *[0-9]" $R/step-long-*.txt | sed 's|.*/r/||' | cut -c1-70
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 fused_router mid_shape_ops_match_cpu cuda_graph_replay > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck-tests.txt
cd $OUT && tar czf r.tgz r
