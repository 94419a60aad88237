#!/usr/bin/env bash
# Session 22, call 3 (27507f9's code: the lm_head over the rows still masked in 128-row
# buckets, bench step's untimed recording pass, the down streams as gate_up's programmatic
# dependents). First flash's fp8 batch-1 step with and without --expert-pdl (interleaved, three
# pairs), then every line of issue 13 on this build.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
F="bench step --preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2 3; do
  for v in true false; do
    timeout 100 $C/dllm $F --batch 1 --expert-pdl $v > $R/pdl-flash-fp8-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/pdl-flash-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 120 $C/dllm $F --batch 1,4,16 > $R/step-flash-fp8.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/step-flash-fp8.txt | sed 's|.*/r/||' | cut -c1-110
M="--preset mini --device cuda --block 32"
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
for i in 1 2 3; do timeout 90 $C/dllm $G > $R/generate-mini-64-$i.txt 2>&1; done
grep -H "tokens/s\|rror" $R/generate-*.txt | sed 's|.*/r/||'
for bt in 1 16 64; do
  timeout 40 $C/dllm bench kernels $M --prefix 1024 --batch $bt --steps 4 > $R/k-b$bt.txt 2>&1
done
grep -H "lm_head\|row_argmax\|sum of" $R/k-*.txt | sed 's|.*/r/||'
cd $OUT && tar czf r.tgz r
