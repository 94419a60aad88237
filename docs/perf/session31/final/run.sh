#!/usr/bin/env bash
# Session 31, call 8: the lines of the final code (77ac811) that its last change moves: steps at
# 1k batch 1-16 and 32k batch 1 and 8, sampled against greedy at batch 16.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
M="--preset mini --device cuda --block 32"
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16 > $R/step-$i.txt 2>&1
  timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1,8 > $R/step-32k-$i.txt 2>&1
done
for i in 1 2; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16 --temperature 0.7 --top-p 0.9 > $R/sampled-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16 > $R/greedy-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/*.txt | sed 's|.*/r/||' | cut -c1-110
cd $OUT && tar czf r.tgz r
