#!/usr/bin/env bash
# Session 16, call 6 (final code, for the next session's plan): what binds moe_router_select at
# batch 1 (~11 us a call, not its selection chain: router-lanes/) and flash's fp8 gate_up stream.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
ST=smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_no_instruction_per_issue_active.ratio,smsp__average_warps_issue_stalled_membar_per_issue_active.ratio,smsp__average_warps_issue_stalled_drain_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_branch_resolving_per_issue_active.ratio,smsp__average_warps_issue_stalled_misc_per_issue_active.ratio
B="$C/dllm bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 2 --batch 1 --disable-cuda-graph"
timeout 200 $NCU --kernel-name moe_router_select --launch-skip 40 --launch-count 1 --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats --section SourceCounters --metrics $ST $B > $R/ncu-router-select-b1.txt 2>&1
echo "router rc=$?"
grep -v "^==PROF==" $R/ncu-router-select-b1.txt | grep -i "duration\|stall\|elapsed\|warp cycles\|issued\|eligible\|active warps\|instructions\|registers" | head -40
F="$C/dllm bench step --preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 2 --batch 1 --disable-cuda-graph"
timeout 250 $NCU --kernel-name moe_gate_up_stream_fp8 --launch-skip 40 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats --section SchedulerStats --metrics $ST $F > $R/ncu-gate-up-stream-fp8-b1.txt 2>&1
echo "stream rc=$?"
grep -v "^==PROF==" $R/ncu-gate-up-stream-fp8-b1.txt | grep -i "duration\|stall\|throughput\|eligible\|active warps\|registers\|bandwidth" | head -40
cd $OUT && tar czf r.tgz r
