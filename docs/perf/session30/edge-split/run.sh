#!/usr/bin/env bash
# Session 30, call 2. Which of call 1's edges costs batch 1 its 3%: dllm_x is call 1's build
# with three temporary environment knobs (edge-split.patch, not landed): DLLM_X_ROUTE_EDGE=0
# launches gate_up plainly after a permuting moe_route (batch 1's router), DLLM_X_NORM_EDGE=0
# the next input norm plainly after down, DLLM_X_LATE=1 moves moe_route's pdl_release from its
# start to after the selection. Against dllm_base (17412cf's build), interleaved. Batch 16 with
# the shared expert among the items (`--shared-expert-items 8`).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
gunzip -c $C/dllm_base.gz > /tmp/dllm_base && chmod +x /tmp/dllm_base
gunzip -c $C/dllm_x.gz > /tmp/dllm_x && chmod +x /tmp/dllm_x
M="--preset mini --device cuda --block 32"
S="bench step $M --prefix 1024 --steps 8 --batch 1,8"
for i in 1 2 3; do
  timeout 60 /tmp/dllm_base $S > $R/base-$i.txt 2>&1
  DLLM_X_ROUTE_EDGE=1 DLLM_X_NORM_EDGE=1 timeout 60 /tmp/dllm_x $S > $R/r1n1-$i.txt 2>&1
  DLLM_X_ROUTE_EDGE=0 DLLM_X_NORM_EDGE=1 timeout 60 /tmp/dllm_x $S > $R/r0n1-$i.txt 2>&1
  DLLM_X_ROUTE_EDGE=1 DLLM_X_NORM_EDGE=0 timeout 60 /tmp/dllm_x $S > $R/r1n0-$i.txt 2>&1
  DLLM_X_ROUTE_EDGE=0 DLLM_X_NORM_EDGE=0 timeout 60 /tmp/dllm_x $S > $R/r0n0-$i.txt 2>&1
  DLLM_X_LATE=1 timeout 60 /tmp/dllm_x $S > $R/late-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/*.txt | sed 's|.*/r/||' | cut -c1-60
# batch 16: the shared expert among the items (8 of them) lets the norm edge apply there too.
S16="bench step $M --prefix 1024 --steps 8 --batch 16"
for i in 1 2 3; do
  timeout 60 /tmp/dllm_base $S16 > $R/b16-base-$i.txt 2>&1
  timeout 60 /tmp/dllm_x $S16 > $R/b16-x-$i.txt 2>&1
  timeout 60 /tmp/dllm_x $S16 --shared-expert-items 8 > $R/b16-items8-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/b16-*.txt | sed 's|.*/r/||' | cut -c1-60
for i in 1 2; do
  timeout 90 /tmp/dllm_base bench step $M --prefix 32736 --steps 8 --batch 1 > $R/k32-base-$i.txt 2>&1
  DLLM_X_ROUTE_EDGE=0 timeout 90 /tmp/dllm_x bench step $M --prefix 32736 --steps 8 --batch 1 > $R/k32-r0n1-$i.txt 2>&1
  DLLM_X_LATE=1 timeout 90 /tmp/dllm_x bench step $M --prefix 32736 --steps 8 --batch 1 > $R/k32-late-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/k32-*.txt | sed 's|.*/r/||' | cut -c1-60
cd $OUT && tar czf r.tgz r
