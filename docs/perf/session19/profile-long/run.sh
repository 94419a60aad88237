#!/usr/bin/env bash
# Session 19, call 1: where a long-context step's attention time goes (74718a8's code).
# Kernel tables and steps at prefix 32,736 (batch 1 and 8, the rule and the deep kernel forced
# at batch 8), then ncu (real clocks) of block_attention_deep at batch 1, block_attention and the
# forced deep kernel at batch 8, and attention_combine at batch 1.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
L="--preset mini --device cuda --block 32 --prefix 32736"
timeout 60 $C/dllm bench kernels $L --batch 1 --steps 4 > $R/k-long-b1.txt 2>&1
timeout 80 $C/dllm bench kernels $L --batch 8 --steps 4 > $R/k-long-b8.txt 2>&1
timeout 80 $C/dllm bench kernels $L --batch 8 --steps 4 --att-deep true > $R/k-long-b8-deep.txt 2>&1
grep -H "attention\|sum of" $R/k-long-*.txt | sed 's|.*/r/||'
timeout 80 $C/dllm bench step $L --batch 1,8 --steps 4 > $R/step-long.txt 2>&1
timeout 80 $C/dllm bench step $L --batch 8 --steps 4 --att-deep true > $R/step-long-b8-deep.txt 2>&1
grep -H "^ *[0-9]" $R/step-long*.txt | sed 's|.*/r/||' | cut -c1-75
NCU="ncu --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section LaunchStats --metrics dram__bytes_read.sum,lts__t_bytes.sum,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum"
S="bench step $L --steps 2 --disable-cuda-graph --mem-fraction-static 0.1"
timeout 100 $NCU -k regex:block_attention_deep --launch-skip 20 --launch-count 1 $C/dllm $S --batch 1 > $R/ncu-deep-b1.txt 2>&1
timeout 100 $NCU -k regex:attention_combine --launch-skip 20 --launch-count 1 $C/dllm $S --batch 1 > $R/ncu-combine-b1.txt 2>&1
timeout 120 $NCU -k regex:'^block_attention$' --launch-skip 700 --launch-count 1 $C/dllm $S --batch 8 > $R/ncu-2cta-b8.txt 2>&1
timeout 120 $NCU -k regex:block_attention_deep --launch-skip 20 --launch-count 1 $C/dllm $S --batch 8 --att-deep true > $R/ncu-deep-b8.txt 2>&1
for f in $R/ncu-*.txt; do echo "== $f"; grep -E "\(.*\)x\(|Duration|DRAM Throughput|dram__bytes|Memory Throughput|L2 Cache Throughput|gmma|Issue Slots Busy|Eligible Warps|Active Warps Per|Warp Cycles Per Issued|smsp__inst_executed|rror" $f | head -16; done
cd $OUT && tar czf r.tgz r
