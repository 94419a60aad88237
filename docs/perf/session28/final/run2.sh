#!/usr/bin/env bash
# Session 28, call 6 (the same machine, still warm after call 5's run.sh): four more interleaved
# greedy / sampled pairs of 8 steps at batch 16 and 64, then one pair of 31 steps (a block of 32's
# every denoising step after the first) at batch 1, 16, 64. The landed code (fb0ab23's build).
set -u; R=$OUT/r; C=.carry; source tools/device-env.sh "$R" >/dev/null
gunzip -c $C/dllm_landed.gz > /tmp/dllm && chmod +x /tmp/dllm
M="--preset mini --device cuda --block 32"
for i in 5 6 7 8; do
  timeout 60 /tmp/dllm bench step $M --prefix 1024 --batch 16,64 --steps 8 > $R/greedy-8-$i.txt 2>&1
  timeout 60 /tmp/dllm bench step $M --prefix 1024 --batch 16,64 --steps 8 --temperature 0.7 --top-p 0.9 > $R/sampled-8-$i.txt 2>&1
done
timeout 90 /tmp/dllm bench step $M --prefix 1024 --batch 1,16,64 --steps 31 > $R/greedy-31-1.txt 2>&1
timeout 90 /tmp/dllm bench step $M --prefix 1024 --batch 1,16,64 --steps 31 --temperature 0.7 --top-p 0.9 > $R/sampled-31-1.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/greedy-*.txt $R/sampled-*.txt | sed 's|.*/r/||' | cut -c1-60
cd $OUT && tar czf r.tgz r
