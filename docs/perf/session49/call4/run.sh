#!/usr/bin/env bash
# Session 49's fourth call: the `bench step` knobs at batch 16, 64 and 128 on an H200 at realistic
# routing. Session 47 swept them on an H100 only (docs/PERF.md, "The measured choices, again at
# realistic routing"); the H200's faster memory moves the expert tiles toward their L2 and
# compute limits (call3: 77% of the copy ceiling at batch 128), so its best choices may differ.
# The default first, in the middle and last; each knob once. `.carry` as call2's. ~4 minutes.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 16,64,128"
run() {  # name, then the knob's flags
  local name=$1; shift
  timeout 60 $C/dllm bench step $M "$@" --json $R/step-$name.json > $R/step-$name.txt 2>&1
  echo "== $name ($*) rc=$? ${SECONDS}s"; grep "^ *[0-9]" $R/step-$name.txt | cut -c1-90
}
run default-1
run item-rows-64 --moe-item-rows 64
run item-rows-128 --moe-item-rows 128
run ws-tiles-off --moe-ws-tiles false
run att-deep-off --att-deep false
pack
run default-2
run att-tma-off --att-tma false
run shared-items-0 --shared-expert-items 0
run fused-moe-norm-off --fused-moe-norm false
run expert-pdl-off --expert-pdl false
run default-3
echo "all: ${SECONDS}s"
pack
