#!/usr/bin/env bash
# Session 39, call 3: what binds the fp8 register tiles. ncu of moe_gate_up_m64_fp8_ra and
# moe_down_m64_fp8_ra in eager launches (bench kernels): mini fp8 at batch 16 with 64-row items
# forced, and at batch 64.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section LaunchStats --section Occupancy --section InstructionStats"
for b in 16 64; do
  timeout 240 $NCU --cache-control none --clock-control none $S -k regex:'^moe_(gate_up|down)_m64_fp8_ra$' --launch-skip 38 --launch-count 2 \
    $C/dllm bench kernels --preset mini --quantization fp8 --device cuda --batch $b --prefix 1024 --moe-item-rows 64 --mem-fraction-static 0.5 > $R/ncu-b$b.txt 2>&1; echo "ncu b$b rc=$?"
  grep -E "^  [a-z_0-9]+ |Duration|Throughput|Pipe|Issue Slots|Stall|Warp Cycles|Eligible|Active Warps|Registers|ERROR" $R/ncu-b$b.txt | head -60
  pack
done
