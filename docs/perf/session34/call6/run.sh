#!/usr/bin/env bash
# Session 34, call 6 (a1030e3's build, the landed code): what holds block_attention_deep at
# batch 64 (57% of its bytes' ceiling, 1.29 ms a step) and at prefill (~420 TFLOP/s): ncu of one
# launch each. And the two-CTA attention kernel at batch 64 and 128 (`--att-deep false`) against
# the deep one, interleaved, three runs each.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
M="--preset mini --device cuda --block 32"
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64,128 > $R/step-deep-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64,128 --att-deep false > $R/step-two-$i.txt 2>&1
done
for n in deep two; do echo "== $n"; grep -h "^ *[0-9]" $R/step-$n-*.txt | awk '{print $1, $5}' | sort -n -s -k1,1 | awk '{a[$1]=a[$1]" "$2} END {for (k in a) print k": "a[k]}' | sort -n; done
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy"
timeout 150 $NCU --cache-control none --clock-control none $S -k regex:'^block_attention_deep$' --launch-skip 30 --launch-count 1 \
  $C/dllm bench step $M --prefix 1024 --steps 4 --batch 64 --disable-cuda-graph --mem-fraction-static 0.3 > $R/ncu-b64.txt 2>&1; echo "ncu b64 rc=$?"
timeout 150 $NCU --cache-control none --clock-control none $S -k regex:'^block_attention_deep$' --launch-skip 10 --launch-count 1 \
  $C/dllm bench prefill $M --prompt-len 4096 --batch 1 --mem-fraction-static 0.3 > $R/ncu-prefill.txt 2>&1; echo "ncu prefill rc=$?"
for f in ncu-b64 ncu-prefill; do echo "== $f"; grep -E "Duration|SM Frequency|DRAM Throughput|L2 Cache Throughput|Compute \(SM\)|Issue Slots Busy|Eligible Warps|No Eligible|Warp Cycles Per Issued|Achieved Occupancy|stalled|Stall|represents" $R/$f.txt | cut -c1-120 | head -24; done
cd $OUT && tar czf r.tgz r
