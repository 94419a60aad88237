#!/usr/bin/env bash
# Session 42, call 2: `dllm` as call 1 kept it. The step figures with what session 41 added to
# them (`expert_math`, `graph_recording`: what recording the CUDA graphs costs a step in the
# untimed pass): mini bf16 at batch 1, 16, 64 (issue 13's lines), mini fp8 at 1-64 and flash fp8 at
# 1-16 (issue 12's one-GPU line at batch 1) as JSON; `bench generate` (issue 13's 7,770 tokens/s
# line, with the shapes it records); then ncu of the W8A8 tiles at mini's batch 64 (session 40's
# lost call 6).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
mkdir -p $R
B="--device cuda --block 32 --prefix 1024 --steps 8"
timeout 100 $C/dllm bench step --preset mini $B --batch 1,16,64 --json $R/step-mini-bf16.json > $R/step-mini-bf16.log 2>&1
timeout 150 $C/dllm bench step --preset mini --quantization fp8 $B --batch 1,4,8,16,32,64 --json $R/step-mini-fp8.json > $R/step-mini-fp8.log 2>&1
timeout 150 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1,4,8,16 --json $R/step-flash-fp8.json > $R/step-flash-fp8.log 2>&1
grep -H "^ *[0-9]\|rror\|recording\|experts as" $R/step-*.log | sed 's|.*/r/||' | cut -c1-130
pack
timeout 90 $C/dllm bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 \
  --json $R/generate-mini-64.json > $R/generate-mini-64.log 2>&1
tail -5 $R/generate-mini-64.log
pack
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section LaunchStats --section Occupancy"
timeout 150 $NCU --cache-control none --clock-control none $S -k regex:'^moe_(gate_up|down)_m64_w8a8$' --launch-skip 38 --launch-count 2 \
  $C/dllm bench kernels --preset mini --quantization fp8 --device cuda --batch 64 --prefix 1024 --mem-fraction-static 0.5 > $R/ncu-b64.txt 2>&1; echo "ncu rc=$?"
grep -E "^  [a-z_0-9]+ |Duration|Throughput|Pipe|Issue Slots|Stall|Warp Cycles|Eligible|Active Warps|Registers|ERROR" $R/ncu-b64.txt | head -50
pack
