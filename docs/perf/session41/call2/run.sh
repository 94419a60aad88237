#!/usr/bin/env bash
# Session 41's plan, call 2 (session 40's call 6, lost there; not run in session 41): the fp8
# step figures as JSON (mini at batch 1-64, flash at 1-16) and ncu of the W8A8 tiles at mini's
# batch 64 (what holds them at ~55% of the bandwidth). `dllm`: whatever call 1 kept.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
mkdir -p $R
B="--device cuda --block 32 --prefix 1024 --steps 8"
timeout 150 $C/dllm bench step --preset mini --quantization fp8 $B --batch 1,4,8,16,32,64 --json $R/step-mini-fp8.json > $R/step-mini-fp8.log 2>&1
timeout 150 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1,4,8,16 --json $R/step-flash-fp8.json > $R/step-flash-fp8.log 2>&1
grep -H "^ *[0-9]\|rror" $R/step-*.log | sed 's|.*/r/||' | cut -c1-110
pack
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section LaunchStats --section Occupancy"
timeout 240 $NCU --cache-control none --clock-control none $S -k regex:'^moe_(gate_up|down)_m64_w8a8$' --launch-skip 38 --launch-count 2 \
  $C/dllm bench kernels --preset mini --quantization fp8 --device cuda --batch 64 --prefix 1024 --mem-fraction-static 0.5 > $R/ncu-b64.txt 2>&1; echo "ncu rc=$?"
grep -E "^  [a-z_0-9]+ |Duration|Throughput|Pipe|Issue Slots|Stall|Warp Cycles|Eligible|Active Warps|Registers|ERROR" $R/ncu-b64.txt | head -50
pack
