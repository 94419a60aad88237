#!/usr/bin/env bash
# Session 47's second call (.carry as call1's: tools/carry-ab.sh e4b0d7a at 8dc3704). Every
# measured-choice knob of the CUDA backend was last tuned at drawn routing, where a block reads
# ~80-150 experts and a few take 8-10x the mean rows; at realistic routing (the default since
# session 46) every expert is read from batch 16 on with at most ~3x the mean. So: batch 16, 64
# and 128 once per knob setting, the default first and last (the spread).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 16,64,128"
run() {  # name, then the knob's flags
  local n=$1; shift
  timeout 60 $C/dllm bench step $B "$@" > "$R/k-$n.txt" 2>&1
  echo "$n $* : $(grep -E '^ +[0-9]+ random' "$R/k-$n.txt" | awk '{printf "%s(%s) ", $5, $7}')$(grep -m1 -i 'error' "$R/k-$n.txt")"
}
SECONDS=0
run default-1
run items64 --moe-item-rows 64
run items64-ws --moe-item-rows 64 --moe-ws-tiles true
run att-deep-off --att-deep false
run att-deep-on --att-deep true
run att-tma-off --att-tma false
run att-ctas2 --att-ctas-per-sm 2
run att-ctas4 --att-ctas-per-sm 4
pack
run fused-router --fused-router true
run shared-items0 --shared-expert-items 0
run moe-norm-off --fused-moe-norm false
run default-2
echo "sweep: ${SECONDS}s"
pack
