#!/usr/bin/env bash
# Session 50's third call: gate_up's 192-row units over the 128-row items (an expert's last two
# items, 128 rows and at most 64, one unit; down keeps the 128-row items), against HEAD's build.
# `.carry` from `bash tools/carry-ab.sh` (dllm: the working tree; dllm-base: HEAD, 6bebda1). ~7 min:
# the CUDA suite and the fixtures (every_item_size forces the units on and off, at 600 tokens
# too); steps at batch 64 and 128: base, new, new with the units off (--moe-gate-up-m192 false),
# interleaved twice; bench kernels at 128, prefill 4,096 x 8 and bench generate, base and new;
# memcheck of the mid shape.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/device-suite.sh "$R"
echo "suite: ${SECONDS}s"
pack
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
bin() { [ "$1" = base ] && echo $C/dllm-base || echo $C/dllm; }
args() { [ "$1" = off ] && echo "--moe-gate-up-m192 false"; }
for i in 1 2; do
  for way in base new off; do
    timeout 100 $(bin $way) bench step $M --batch 64,128 $(args $way) --json $R/step-$way-$i.json > $R/step-$way-$i.txt 2>&1
    echo "step $way $i rc=$?"; grep -E "^ +[0-9]+ (random|mask) |rror" $R/step-$way-$i.txt | cut -c1-150
  done
done
echo "steps: ${SECONDS}s"
pack
for way in base new; do
  timeout 120 $(bin $way) bench kernels --preset mini --device cuda --prefix 1024 --batch 128 > $R/kernels-b128-$way.txt 2>&1
  echo "kernels b128 $way rc=$?"; grep -i "moe_gate_up\|moe_down\|sum of\|rror" $R/kernels-b128-$way.txt | cut -c1-160
done
pack
for way in base new; do
  timeout 60 $(bin $way) bench prefill --preset mini --device cuda --prompt-len 4096 --batch 8 \
      --json $R/prefill-4096x8-$way.json > $R/prefill-4096x8-$way.txt 2>&1
  echo "prefill 4096x8 $way rc=$?"; grep -E "^ +[0-9]|rror" $R/prefill-4096x8-$way.txt | cut -c1-160
done
for way in base new; do
  timeout 60 $(bin $way) bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 \
      --json $R/generate-$way.json > $R/generate-$way.txt 2>&1
  echo "generate $way rc=$?"; grep -h "tokens/s\|rror\|warning" $R/generate-$way.txt | cut -c1-200
done
echo "perf: ${SECONDS}s"
pack
bash tools/memcheck-tests.sh "$R" cuda::mid_shape_ops_match_cpu
echo "total: ${SECONDS}s"
pack
