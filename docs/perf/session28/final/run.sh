#!/usr/bin/env bash
# Session 28, call 5: the landed code (fb0ab23's build, dllm_landed). Sampled (temperature 0.7,
# top-p 0.9) against greedy steps, interleaved: four pairs of 8 steps (the block's first 8
# denoising steps, as sessions 15-27 measured it) at batch 1, 16, 64, then one pair of 32 steps
# (refused: at most block - 1 = 31; run2.sh ran 31); and sample_rows' kernel time.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
gunzip -c $C/dllm_landed.gz > /tmp/dllm && chmod +x /tmp/dllm
M="--preset mini --device cuda --block 32"
S="bench step $M --prefix 1024 --batch 1,16,64"
for i in 1 2 3 4; do
  timeout 60 /tmp/dllm $S --steps 8 > $R/greedy-8-$i.txt 2>&1
  timeout 60 /tmp/dllm $S --steps 8 --temperature 0.7 --top-p 0.9 > $R/sampled-8-$i.txt 2>&1
done
timeout 90 /tmp/dllm $S --steps 32 > $R/greedy-32-1.txt 2>&1
timeout 90 /tmp/dllm $S --steps 32 --temperature 0.7 --top-p 0.9 > $R/sampled-32-1.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/greedy-*.txt $R/sampled-*.txt | sed 's|.*/r/||' | cut -c1-70
for b in 16 64; do
  timeout 40 /tmp/dllm bench kernels $M --prefix 1024 --batch $b --steps 4 --temperature 0.7 --top-p 0.9 > $R/k-sampled-b$b.txt 2>&1
done
grep -H "sample_rows\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-100
cd $OUT && tar czf r.tgz r
