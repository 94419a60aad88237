#!/usr/bin/env bash
# Session 60's third call: qkv_rope_store without its f64 angle fallback (call2 measured the
# kernel at 48% / 60% of the GEMM rate at batch 64 / 128, slower than cuBLAS + the rope kernel;
# its code was 105 KB, now 49 KB: the host keeps positions past the angle table off it).
# 1. the fused kernel's test, graph replay; 2. `bench kernels` at batch 64 and 128, off and on;
# 3. steps at batch 16, 64 and 128, off / on / on at every batch, two rounds; 4. ncu of the fused
# kernel at batch 128 (its stall reasons).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/cuda-tests.sh $R qkv_rope_store_fused_matches_cpu cuda_graph_replay_equals_eager
rc=$?
grep -h "qkv_rope_store launched\|not available" $R/cuda-tests.txt | head -4
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; grep -h -B2 -A12 "panicked" $R/cuda-tests.txt | head -60; pack; exit 1; }
W="off:$C/dllm:--fused-qkv-rope false;on:$C/dllm:--fused-qkv-rope true"
for b in 64 128; do
  bash tools/ab-ways.sh $R/kernels-b$b 1 "$W" kernels --preset mini --device cuda --prefix 1024 --batch $b
  grep -h "qkv\|rope" $R/kernels-b$b/*.txt | tr -s ' ' | cut -c1-110
done
pack
W3="off:$C/dllm:--fused-qkv-rope false;on:$C/dllm:--fused-qkv-rope true;all:$C/dllm:--fused-qkv-rope true --fused-qkv-rope-min-rows 1"
bash tools/ab-ways.sh $R 2 "$W3" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 16,64,128
pack
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
S="--section SpeedOfLight --section WarpStateStats --section SchedulerStats --section LaunchStats --section InstructionStats"
timeout 150 $NCU --cache-control none --clock-control none $S -k regex:'^qkv_rope_store' --launch-skip 5 --launch-count 1 \
  $C/dllm bench kernels --preset mini --device cuda --batch 128 --prefix 1024 --fused-qkv-rope true > $R/ncu-b128.txt 2>&1; echo "ncu rc=$?"
grep -E "^  [a-z_0-9]+ |Duration|Throughput|Issue Slots|Stall|Warp Cycles|Eligible|Active Warps|Registers|Executed Ipc|ERROR" $R/ncu-b128.txt | head -40
pack
echo "total: ${SECONDS}s"
