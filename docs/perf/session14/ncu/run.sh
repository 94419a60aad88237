#!/usr/bin/env bash
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
B="$C/dllm bench step --preset mini --device cuda --block 32 --batch 1 --prefix 32736 --steps 2 --disable-cuda-graph"
timeout 280 $NCU --kernel-name block_attention_deep --launch-skip 20 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section SchedulerStats --section WarpStateStats --section LaunchStats --section Occupancy $B > $R/ncu-deep-b1-32k.txt 2>&1
timeout 200 $NCU --kernel-name block_attention_deep --launch-skip 20 --launch-count 1 --section SourceCounters --metrics smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_dispatch_stall_per_issue_active.ratio,smsp__average_warps_issue_stalled_no_instruction_per_issue_active.ratio,smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_sleeping_per_issue_active.ratio,smsp__average_warps_issue_stalled_membar_per_issue_active.ratio,smsp__average_warps_issue_stalled_branch_resolving_per_issue_active.ratio,smsp__average_warps_issue_stalled_misc_per_issue_active.ratio,smsp__average_warps_issue_stalled_drain_per_issue_active.ratio,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum $B > $R/ncu-deep-b1-32k-stalls.txt 2>&1
grep -v "^==PROF==\|^    ---" $R/ncu-deep-b1-32k.txt | tail -90
grep -v '^==' $R/ncu-deep-b1-32k-stalls.txt | grep -i 'stalled\|pipe\|wavefront\|Stall' | head -40
cd $OUT && tar czf r.tgz r
