#!/usr/bin/env bash
# Session 16, call 3: moe_router_select in registers for groups of 32 experts, and moe_combine
# writing the MoE output where nothing is there to add to (no memset). Tests, memcheck, then the
# step and the kernels against the last commit's binary (dllm_base, ed2c846's code), interleaved;
# and flash with fp8 experts at batch 1 kernel by kernel (issue 12's 1.3x).
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 100 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked" $R/cuda-tests.txt | head -5
timeout 60 $C/test_cuda_kernels --test-threads=1 --nocapture router_lane_groups > $R/router-test.txt 2>&1
grep -h "route layer\|test result" $R/router-test.txt | sort | uniq -c | sort -rn | head -8
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16,64,128"
for i in 1 2; do
  for b in dllm dllm_base; do
    timeout 100 $C/$b $S > $R/step-$b-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-80
for n in 1 64; do
  for b in dllm dllm_base; do
    timeout 60 $C/$b bench kernels --preset mini --device cuda --batch $n --prefix 1024 --steps 4 > $R/k-$b-b$n.txt 2>&1
  done
done
grep -H "router_select\|moe_combine\|sum of" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-120
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 router_lane_groups mid_shape_ops_match_cpu cuda_graph_replay > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY" $R/memcheck-tests.txt
timeout 150 $C/dllm bench kernels --preset flash --quantization fp8 --device cuda --batch 1 --prefix 1024 --steps 4 > $R/k-flash-fp8-b1.txt 2>&1
echo "flash rc=$?"; head -30 $R/k-flash-fp8-b1.txt | cut -c1-120
cd $OUT && tar czf r.tgz r
