#!/usr/bin/env bash
# Session 26, call 5 (1484c5a's code: down's 16-byte stores and early routing weights). First
# 64-row warp-specialized items at batch 64 and 128 and in prefill (--moe-item-rows 64
# --moe-ws-tiles true; and the one-warpgroup 64-row tiles) against the rule's 128: with units
# taken in order (session 25) an expert's second item reads its weights from the L2, and at
# batch 64 the 128-row gate_up has 592 units for 132 CTAs (4.5 rounds). Then every line of
# issue 13 on this build.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
M="--preset mini --device cuda --block 32"
declare -A OPT=([rule]="" [m64ws]="--moe-item-rows 64 --moe-ws-tiles true" [m64]="--moe-item-rows 64 --moe-ws-tiles false")
for i in 1 2; do
  for v in rule m64ws m64; do
    timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64,128 ${OPT[$v]} > $R/items-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/items-*.txt | sed 's|.*/r/||' | cut -c1-120
for b in 64 128; do
  timeout 40 $C/dllm bench kernels $M --prefix 1024 --batch $b --steps 4 ${OPT[m64ws]} > $R/k-b$b-m64ws.txt 2>&1
done
grep -H "moe_gate\|moe_down\|sum of\|rror" $R/k-*m64ws.txt | sed 's|.*/r/||' | cut -c1-130
timeout 100 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 ${OPT[m64ws]} > $R/prefill-4096-m64ws.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/prefill-4096-m64ws.txt | sed 's|.*/r/||' | cut -c1-120
for i in 1 2; do
  timeout 80 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,16,64,128 > $R/step-1k-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1,8 > $R/step-32k-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-1k-*.txt $R/step-32k-*.txt | sed 's|.*/r/||' | cut -c1-120
timeout 150 $C/dllm bench prefill $M --prompt-len 4096,32736 --batch 1,8 > $R/prefill.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/prefill.txt | sed 's|.*/r/||' | cut -c1-120
S="bench step $M --prefix 1024 --steps 8 --batch 1,16,64"
for i in 1 2; do
  timeout 60 $C/dllm $S > $R/step-greedy-$i.txt 2>&1
  timeout 60 $C/dllm $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-greedy-*.txt $R/step-sampled-*.txt | sed 's|.*/r/||' | cut -c1-110
G="bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128"
for i in 1 2; do timeout 90 $C/dllm $G > $R/generate-mini-64-$i.txt 2>&1; done
grep -H "tokens/s\|rror" $R/generate-*.txt | sed 's|.*/r/||'
cd $OUT && tar czf r.tgz r
