#!/usr/bin/env bash
# Session 30, call 5: moe_route's reach (FUSED_ROUTE_MAX_ROWS, 512 rows) now that gate_up follows
# moe_permute as its dependent and batch 16 takes the shared expert among its items (0298759's
# build, call 4's binary): the default against `--fused-router false` (cuBLAS's logits and
# moe_router_select before moe_permute) at batch 4, 8 and 16, interleaved.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
M="--preset mini --device cuda --block 32"
S="bench step $M --prefix 1024 --steps 8 --batch 4,8,16"
for i in 1 2 3 4; do
  timeout 60 $C/dllm $S > $R/route-$i.txt 2>&1
  timeout 60 $C/dllm $S --fused-router false > $R/rule-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/*.txt | sed 's|.*/r/||' | cut -c1-70
cd $OUT && tar czf r.tgz r
