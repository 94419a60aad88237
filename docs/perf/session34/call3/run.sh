#!/usr/bin/env bash
# Session 34, call 3: the lines on a1030e3 (764ee99's tiles: the 128-row warp-specialized tiles
# as one m64n256k16 a k16 a warpgroup). Steps at 1k and 32k, sampled against greedy, prefills,
# `bench generate`. Then a diagnostic: dllm_st3 is the same code with the 128-row
# warp-specialized tiles' ring cut from 4 stages to 3 (bytes in flight: does that slow them as
# much as held x's fewer bytes in flight did, call 2?). Last, ncu of a 4,096-token prefill's
# gate_up and down (one layer each).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
gunzip -c $C/dllm_st3.gz > /tmp/dllm_st3 && chmod +x /tmp/dllm_st3
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16,64,128 > $R/step-$i.txt 2>&1
  timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1,8 > $R/step-32k-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 --temperature 0.7 --top-p 0.9 > $R/sampled-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 > $R/greedy-$i.txt 2>&1
done
for i in 1 2 3; do timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-$i.txt 2>&1; done
timeout 200 $C/dllm bench prefill $M --prompt-len 4096,32736 --batch 8,1 > $R/prefill-long.txt 2>&1
for i in 1 2; do
  timeout 90 $C/dllm bench generate $M --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic\|tokens/s" $R/*.txt | sed 's|.*/r/||' | cut -c1-120
for b in 64 128; do
  timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch $b > $R/k-b$b.txt 2>&1
  timeout 60 /tmp/dllm_st3 bench kernels $M --prefix 1024 --batch $b > $R/k-st3-b$b.txt 2>&1
done
grep -H "moe_gate_up_m128_ws\|moe_down_m128_ws" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-120
for i in 1 2; do
  timeout 60 /tmp/dllm_st3 bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-st3-$i.txt 2>&1
  timeout 60 /tmp/dllm_st3 bench step $M --prefix 1024 --steps 8 --batch 64,128 > $R/step-st3-$i.txt 2>&1
done
grep -H "^ *[0-9]" $R/prefill-st3-*.txt $R/step-st3-*.txt | sed 's|.*/r/||' | cut -c1-100
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
timeout 200 $NCU --cache-control none --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis \
  --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section LaunchStats \
  -k regex:'^(moe_gate_up_m128_ws|moe_down_m128_ws)$' --launch-skip 20 --launch-count 2 \
  $C/dllm bench prefill $M --prompt-len 4096 --batch 1 --mem-fraction-static 0.5 > $R/ncu-prefill.txt 2>&1; echo "ncu rc=$?"
grep -E "^  [a-z_0-9]+ |Duration|Throughput|Pipe|Issue Slots|Stall|Warp Cycles|Eligible|ERROR" $R/ncu-prefill.txt | head -70
cd $OUT && tar czf r.tgz r
