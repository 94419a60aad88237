#!/usr/bin/env bash
# Session 27, call 2. (a) Where sample_rows' time goes now (c86b456's sampler, dllm): two probe
# builds that skip part of a top-p row's work and draw garbage (timing only, never kept):
# dllm_p1 stops after the second pass's sums (no candidate digits, no draw), dllm_p2 after the
# max pass's cluster barrier (no guide bin, no second pass). `bench kernels` at batch 64, sampled.
# (b) The warp-specialized expert tiles' consumers read their unit's first slot and rows from
# shared memory, written by the producer beside the unit (dllm_e1), where they loaded them from
# the item list in global memory before the first wgmma: greedy steps at 64 and 128, their
# kernels, a 4,096-token prefill, against dllm (c86b456), interleaved.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
for z in $C/*.gz; do gunzip -c $z > /tmp/$(basename $z .gz); chmod +x /tmp/$(basename $z .gz); done
D=/tmp; cp $C/dllm /tmp/dllm
M="--preset mini --device cuda --block 32"
for v in dllm dllm_p1 dllm_p2; do
  timeout 40 $D/$v bench kernels $M --prefix 1024 --batch 64 --steps 4 --temperature 0.7 --top-p 0.9 > $R/k-sampled-b64-$v.txt 2>&1
done
grep -H "sample_rows\|sum of\|rror" $R/k-sampled-*.txt | sed 's|.*/r/||' | cut -c1-130
for i in 1 2; do
  for v in dllm_e1 dllm; do
    timeout 60 $D/$v bench step $M --prefix 1024 --steps 8 --batch 64,128 > $R/step-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-110
for v in dllm_e1 dllm; do
  for b in 64 128; do
    timeout 40 $D/$v bench kernels $M --prefix 1024 --batch $b --steps 4 > $R/k-b$b-$v.txt 2>&1
  done
  timeout 60 $D/$v bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-4096-$v.txt 2>&1
done
grep -H "moe_gate\|moe_down\|sum of\|rror" $R/k-b*.txt | sed 's|.*/r/||' | cut -c1-130
grep -H "^ *[0-9]\|rror" $R/prefill*.txt | sed 's|.*/r/||' | cut -c1-120
cd $OUT && tar czf r.tgz r
