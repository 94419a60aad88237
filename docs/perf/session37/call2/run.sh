#!/usr/bin/env bash
# Session 37, call 2: what binds the fp8 weight streams now (ring and registers). `bench kernels`
# of flash with fp8 experts at batch 1 both ways; ncu of the ring's gate_up and down on flash
# (application replay: a kernel replay of ~100 GB of weights failed in session 16) and on mini.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
F="--preset flash --quantization fp8 --device cuda --block 32 --prefix 1024"
for v in true false; do
  timeout 60 $C/dllm bench kernels $F --batch 1 --stream-ring $v > $R/k-flash-fp8-b1-$v.txt 2>&1
  grep -h "moe_\|sum of\|rror" $R/k-flash-fp8-b1-$v.txt | cut -c1-110
done
pack
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
ST=smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_no_instruction_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_branch_resolving_per_issue_active.ratio,smsp__average_warps_issue_stalled_misc_per_issue_active.ratio,smsp__average_warps_issue_stalled_dispatch_stall_per_issue_active.ratio,smsp__average_warps_issue_stalled_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio
SEC="--section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats --section SchedulerStats --section LaunchStats"
FB="$C/dllm bench step $F --steps 2 --batch 1 --disable-cuda-graph"
for k in moe_gate_up_stream_fp8_ring moe_down_stream_fp8_ring; do
  timeout 150 $NCU --replay-mode application --kernel-name $k --launch-skip 40 --launch-count 1 $SEC --metrics $ST $FB > $R/ncu-flash-$k.txt 2>&1
  echo "$k rc=$?"
  grep -v "^==PROF==" $R/ncu-flash-$k.txt | grep -i "duration\|stall\|throughput\|eligible\|active warps\|registers\|issued\|error" | head -40
  pack
done
MB="$C/dllm bench step --preset mini --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 2 --batch 1 --disable-cuda-graph"
k=moe_gate_up_stream_fp8_ring
timeout 120 $NCU --kernel-name $k --launch-skip 40 --launch-count 1 $SEC --metrics $ST $MB > $R/ncu-mini-$k.txt 2>&1
echo "mini $k rc=$?"
grep -v "^==PROF==" $R/ncu-mini-$k.txt | grep -i "duration\|stall\|throughput\|eligible\|active warps\|registers\|issued\|error" | head -40
pack
