#!/usr/bin/env bash
# Session 33, call 6: the expert tiles' rule at batch 1-32, by the existing knobs on b94e2ca's
# build: the warp-specialized tiles for 64-row items (with the shared expert then on the side
# stream: the tiles take no shared expert among the items), and 128-row items, against the rule
# (one-warpgroup 64-row tiles, the shared expert among the items up to 4 items). Interleaved.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,8,16,32"
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M > $R/rule-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --moe-ws-tiles true --shared-expert-items 0 > $R/ws64-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --moe-item-rows 128 > $R/m128-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --shared-expert-items 0 > $R/side-$i.txt 2>&1
done
for n in rule ws64 m128 side; do echo "== $n"; grep -h "^ *[0-9]" $R/$n-*.txt | awk '{print $1, $5}' | sort -n -s -k1,1 | awk '{a[$1]=a[$1]" "$2} END {for (k in a) print k": "a[k]}' | sort -n; done
grep -l "rror\|panic" $R/*.txt
cd $OUT && tar czf r.tgz r
