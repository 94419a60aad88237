#!/usr/bin/env bash
# Session 17, calls 2-3: ncu of the bf16 expert tiles in eager steps (bench step, past the
# prefix's prefill), real clocks: batch 64 (128-row items: one warpgroup a CTA against the wide
# two-warpgroup CTA) and batch 16 (64-row items); layer 0's gate_up and down of a step each.
# Call 2 (kernels bench, first launches) caught a prefill chunk's gate_up instead
# (ncu-prefill-chunk-m128-call2.txt) and ran out of memory after; this is call 3.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
NCU="ncu --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy --section WarpStateStats --section SchedulerStats --section LaunchStats --metrics dram__bytes_read.sum,lts__t_bytes.sum,sm__inst_executed_pipe_tensor_op_gmma.sum,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active"
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 4 --disable-cuda-graph --mem-fraction-static 0.05"
# The prefill of 64 x 1024 prefix tokens is 8 or 9 forwards of up to 8192 tokens (128-row items
# too): at most 342 matching launches; the steps follow, 38 a step.
timeout 170 $NCU -k regex:'^moe_(gate_up|down)_m128$' --launch-skip 400 --launch-count 2 $C/dllm $S --batch 64 > $R/ncu-b64-m128.txt 2>&1; echo "rc=$?"; sleep 3
timeout 170 $NCU -k regex:'^moe_(gate_up|down)_m128_wide$' --launch-skip 400 --launch-count 2 $C/dllm $S --batch 64 --moe-wide-tiles true > $R/ncu-b64-m128-wide.txt 2>&1; echo "rc=$?"; sleep 3
timeout 120 $NCU -k regex:'^moe_(gate_up|down)_m64$' --launch-skip 40 --launch-count 2 $C/dllm $S --batch 16 > $R/ncu-b16-m64.txt 2>&1; echo "rc=$?"
for f in $R/ncu-*.txt; do echo "== $f"; grep -E "^  moe_|Duration|DRAM Throughput|L2 Cache Throughput|Compute \(SM\)|dram__bytes|lts__t_bytes|gmma|L2 Hit|Eligible Warps|Warp Cycles Per Issued|ERROR" $f | head -40; done
cd $OUT && tar czf r.tgz r
