#!/usr/bin/env bash
# Session 38, call 9: with down now waiting for its own item (704e328), does the expert tiles'
# rule at batch 1-32 still hold? Session 36 measured every alternative slower. Mini bf16, batch
# 1, 4, 8, 16, 32, two runs each, interleaved: the rule; the warp-specialized tiles for 64-row
# items; 128-row items; moe_route past 256 rows (batch 16 and 32).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,8,16,32"
for i in 1 2; do
  timeout 120 $C/dllm bench step $B > $R/rule-$i.txt 2>&1
  timeout 120 $C/dllm bench step $B --moe-ws-tiles true > $R/ws64-$i.txt 2>&1
  timeout 120 $C/dllm bench step $B --moe-item-rows 128 > $R/rows128-$i.txt 2>&1
  timeout 120 $C/dllm bench step $B --fused-router true > $R/route-$i.txt 2>&1
done
for f in rule ws64 rows128 route; do grep -H "^ *[0-9]\|rror" $R/$f-*.txt | sed 's|.*/r/||' | cut -c1-70; done
pack
