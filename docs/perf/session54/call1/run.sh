#!/usr/bin/env bash
# Session 54's call: issue 13's open lines on an H200 at 26d9358 (the code of 536106c: gate_up's
# 192-row units in their final form, never timed on an H200). `.carry/dllm` is 26d9358's release
# build, stripped. Steps at batch 1-128 (prefix 1024, block 32, realistic routing), twice;
# `bench generate` (64 requests, 2 a step), twice. Only on an H200: the lines are judged there.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
grep -q H200 $R/device.txt || { echo "not an H200: nothing run"; pack; exit 0; }
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
for round in 1 2; do
  timeout 90 $C/dllm bench step $M --batch 1,4,16,64,128 --json $R/step-$round.json > $R/step-$round.txt 2>&1
  echo "step round $round rc=$? (${SECONDS}s)"; grep -E "^ +[0-9]+ (random|mask) |device:" $R/step-$round.txt | cut -c1-150
  pack
  timeout 45 $C/dllm bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 \
      --json $R/generate-$round.json > $R/generate-$round.txt 2>&1
  echo "generate round $round rc=$? (${SECONDS}s)"; grep -h "tokens/s" $R/generate-$round.txt | cut -c1-200
  pack
done
echo "total: ${SECONDS}s"
