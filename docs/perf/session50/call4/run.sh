#!/usr/bin/env bash
# Session 50's fourth call: call3's A/B (gate_up's 192-row units against HEAD's build) on an
# H200, where gate_up at batch 128 is bound by the L2 rather than by DRAM (call1: 76% of the copy
# ceiling as 128-row units). `.carry` as call3's. ~4 min: steps at batch 64 and 128, base and
# new, interleaved twice; bench kernels at 128 and bench generate, base and new. Then, with
# time left on an H200, session 49's call4 (the knob sweep, ~4 min).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
bin() { [ "$1" = base ] && echo $C/dllm-base || echo $C/dllm; }
for i in 1 2; do
  for way in base new; do
    timeout 100 $(bin $way) bench step $M --batch 64,128 --json $R/step-$way-$i.json > $R/step-$way-$i.txt 2>&1
    echo "step $way $i rc=$?"; grep -E "^ +[0-9]+ (random|mask) |rror" $R/step-$way-$i.txt | cut -c1-150
  done
done
echo "steps: ${SECONDS}s"
pack
for way in base new; do
  timeout 120 $(bin $way) bench kernels --preset mini --device cuda --prefix 1024 --batch 128 > $R/kernels-b128-$way.txt 2>&1
  echo "kernels b128 $way rc=$?"; grep -i "moe_gate_up\|moe_down\|sum of\|rror" $R/kernels-b128-$way.txt | cut -c1-160
done
for way in base new; do
  timeout 60 $(bin $way) bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 \
      --json $R/generate-$way.json > $R/generate-$way.txt 2>&1
  echo "generate $way rc=$?"; grep -h "tokens/s\|rror\|warning" $R/generate-$way.txt | cut -c1-200
done
echo "perf: ${SECONDS}s"
pack
if grep -q H200 $R/device.txt && [ $SECONDS -lt 260 ]; then
  OUT=$OUT/knobs bash docs/perf/session49/call4/run.sh
fi
echo "total: ${SECONDS}s"
