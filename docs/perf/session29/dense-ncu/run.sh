#!/usr/bin/env bash
# Session 29, call 2: ncu of the new dense_stream (call 1's build) in an eager batch-1 step:
# layer 0's QKV, attention out and gated MLP launches; what its 17 us a launch (against cuBLAS's
# 10) go to.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
NCU="ncu --clock-control none --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis --metrics dram__bytes_read.sum,gpu__time_duration.sum,smsp__cycles_active.avg,sm__cycles_active.avg,launch__cluster_max_active_per_gpu"
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 2 --disable-cuda-graph --mem-fraction-static 0.05 --batch 1 --dense-stream"
timeout 200 $NCU -k regex:'^dense_' --launch-count 3 $C/dllm $S > $R/ncu-dense.txt 2>&1; echo "ncu rc=$?"
grep -E "^  dense_|Duration|DRAM Throughput|Memory Throughput|Cluster|Waves|Achieved Occupancy|Theoretical Occupancy|Block Limit|Registers Per|Shared Memory Config|Dynamic Shared|Warp Cycles Per Issued|Stall|dram__bytes|cycles_active|No Eligible|Active Warps|Eligible Warps|ERROR|==PROF==|Grid Size" $R/ncu-dense.txt | head -120
cd $OUT && tar czf r.tgz r
