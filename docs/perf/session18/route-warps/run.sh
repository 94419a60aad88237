#!/usr/bin/env bash
# Session 18, call 2: moe_route with a warp a row (all of a CTA's rows at once, in registers) and
# four stages: the router tests, the batch-1 kernel table and steps both ways (interleaved), the
# forced multi-cluster form at 4 and 16, and ncu of one moe_route launch of a batch-1 step.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 100 $C/test_cuda_kernels --test-threads=1 fused_router mid_shape_ops > $R/router-tests.txt 2>&1; echo "rc=$?" >> $R/router-tests.txt
grep -h "test result\|^rc=\|panicked" $R/router-tests.txt | head -8
for f in true false; do
  timeout 60 $C/dllm bench kernels --preset mini --device cuda --batch 1 --prefix 1024 --steps 4 --fused-router $f > $R/k-b1-$f.txt 2>&1
done
grep -H "moe_route\|router\|moe_permute\|sum of" $R/k-*.txt | sed 's|.*/r/||'
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16"
for i in 1 2; do
  for f in true false; do timeout 60 $C/dllm $S --fused-router $f > $R/step-$f-$i.txt 2>&1; done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-70
NCU="ncu --clock-control none --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section LaunchStats --section SourceCounters --section MemoryWorkloadAnalysis"
timeout 150 $NCU -k regex:'^moe_route$' --launch-skip 19 --launch-count 1 $C/dllm bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 2 --batch 1 --disable-cuda-graph > $R/ncu-route-b1.txt 2>&1; echo "ncu rc=$?"
timeout 150 ncu --clock-control none --section WarpStateStats --section SourceCounters --page source --print-source sass --csv -k regex:'^moe_route$' --launch-skip 19 --launch-count 1 $C/dllm bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 2 --batch 1 --disable-cuda-graph > $R/ncu-route-b1-sass.csv 2>&1; echo "ncu sass rc=$?"
grep -E "Duration|Elapsed Cycles|SM Active|Warp Cycles Per Issued|Eligible Warps|stall|Executed Ipc" $R/ncu-route-b1.txt | head -20
cd $OUT && tar czf r.tgz r
