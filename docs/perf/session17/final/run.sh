#!/usr/bin/env bash
# Session 17, call 10 (final code: the warp-specialized tiles taken for 128-row items by default):
# the whole CUDA test suite, the fixtures, memcheck of the mid shapes and graph replay; the mini
# step where it stands (1k and 32k prefixes, greedy and sampled).
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 120 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked" $R/cuda-tests.txt | head -5
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16,64,128"
for i in 1 2; do timeout 60 $C/dllm $S > $R/step-mini-$i.txt 2>&1; done
timeout 60 $C/dllm bench step --preset mini --device cuda --block 32 --prefix 32736 --steps 4 --batch 1,8 > $R/step-mini-long.txt 2>&1
timeout 60 $C/dllm bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,16,64 --temperature 0.7 --top-p 0.9 > $R/step-mini-sampled.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/step-mini-*.txt | sed 's|.*/r/||' | cut -c1-100
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu cuda_graph_replay > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY" $R/memcheck-tests.txt
cd $OUT && tar czf r.tgz r
# Call 11 (the same warm machine, right after): the final binary by its rule against
# --moe-ws-tiles false, interleaved (ab-*.txt):
#   S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,16,64,128"
#   for i in 1 2; do .carry/dllm $S > ab-rule-$i.txt; .carry/dllm $S --moe-ws-tiles false > ab-false-$i.txt; done
