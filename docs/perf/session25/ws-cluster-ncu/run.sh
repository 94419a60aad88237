#!/usr/bin/env bash
# Session 25, call 3: ncu of the 128-row warp-specialized expert tiles at batch 128 (eager steps
# past the prefix's prefill, real clocks), unclustered (moe_*_m128_ws) against clusters of two
# sharing each weight tile's L2 read (moe_*_m128_wsc2), which measured 13% slower: what binds
# them, the L2's reads, the SMs' inbound traffic, or neither.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
NCU="ncu --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --section WarpStateStats --section LaunchStats --section Occupancy --metrics dram__bytes_read.sum,lts__t_bytes.sum,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sectors_op_read.sum,l1tex__m_xbar2l1tex_read_bytes.sum,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,lts__throughput.avg.pct_of_peak_sustained_elapsed,smsp__average_warp_latency_issue_stalled_barrier,gpu__time_duration.sum"
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 4 --disable-cuda-graph --mem-fraction-static 0.05 --batch 128"
# The prefill of 128 x 1024 prefix tokens is 16 forwards of 8192 tokens (608 matching launches);
# the steps follow, 38 a step.
for c in 1 2; do
  timeout 170 $NCU -k regex:'^moe_(gate_up|down)_m128_wsc?2?$' --launch-skip 650 --launch-count 2 $C/dllm $S --moe-ws-cluster $c > $R/ncu-b128-c$c.txt 2>&1; echo "rc=$?"
done
for f in $R/ncu-*.txt; do echo "== $f"; grep -E "^  moe_|Duration|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Compute \(SM\)|Memory Throughput|dram__bytes|lts__|l1tex__m|gmma|Grid Size|Stall|ERROR" $f | head -40; done
cd $OUT && tar czf r.tgz r
