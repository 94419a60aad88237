#!/usr/bin/env bash
# Session 47's fourth call (.carry as call1's). call2's sweep (H100) had the warp-specialized
# tiles at 64-row items (--moe-ws-tiles true) 1.9% faster at batch 16 than the rule (which takes
# them for 128-row items only: 2% slower at 64 in session 17, at drawn routing). Interleaved,
# three rounds, batch 1, 4, 16, 32 (the batches whose items are 64 rows), realistic routing.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R" > /dev/null
pack() { (cd $OUT && tar czf r.tgz r); }
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,4,16,32"
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $B > $R/w-rule-$i.txt 2>&1
  timeout 60 $C/dllm bench step $B --moe-ws-tiles true > $R/w-ws-$i.txt 2>&1
done
for f in $R/w-*.txt; do echo "$(basename $f) $(grep -E '^ +[0-9]+ random' $f | awk '{printf "%s ", $5}')$(grep -m1 -i error $f)"; done
pack
