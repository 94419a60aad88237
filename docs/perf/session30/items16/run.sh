#!/usr/bin/env bash
# Session 30, call 7 (on call 6's machine, c8b530d's build): the shared expert among 16 items
# (`--shared-expert-items 16`: batch 32's sixteen 64-row items, and batch 64's sixteen 128-row
# items, which then leave the warp-specialized tiles) against the default (8), interleaved.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 32,64"
for i in 1 2 3; do
  timeout 60 $C/dllm $S > $R/items8-$i.txt 2>&1
  timeout 60 $C/dllm $S --shared-expert-items 16 > $R/items16-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/*.txt | sed 's|.*/r/||' | cut -c1-70
cd $OUT && tar czf r.tgz r
