#!/usr/bin/env bash
# Session 19, call 5 (120f93a): the three mechanical refactors (RouteParams holding RouterParams,
# expert_items shared by moe_permute and moe_route, Kernels::ready) under the whole CUDA suite,
# the fixtures and memcheck of the router, permute and graph tests; then where a 4,096-token
# prefill's time goes (ncu, one kernel at a time, summed per kernel name).
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 fused_router mid_shape_ops_match_cpu cuda_graph_replay > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck-tests.txt
M="--preset mini --device cuda --block 32"
timeout 80 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,16,64,128 > $R/step-1k.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/step-1k.txt | sed 's|.*/r/||' | cut -c1-100
timeout 240 ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel $C/dllm bench prefill --preset mini --device cuda --prompt-len 4096 --batch 8 --mem-fraction-static 0.1 > $R/ncu-prefill-4096x8.txt 2>&1
grep -E "^  [a-z_]|gpu__time_duration|Invocations|rror" $R/ncu-prefill-4096x8.txt | head -120
cd $OUT && tar czf r.tgz r
