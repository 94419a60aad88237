#!/usr/bin/env bash
# Session 33, call 5: the lines on the final code (dllm: b94e2ca's build; be6e944 changed only
# tools/kernel-trace). Steps at 1k and 32k, sampled against greedy, prefills, `bench generate`.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16,64,128 > $R/step-$i.txt 2>&1
  timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1,8 > $R/step-32k-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 --temperature 0.7 --top-p 0.9 > $R/sampled-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 > $R/greedy-$i.txt 2>&1
done
for i in 1 2 3; do timeout 120 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-$i.txt 2>&1; done
timeout 200 $C/dllm bench prefill $M --prompt-len 4096,32736 --batch 8,1 > $R/prefill-long.txt 2>&1
for i in 1 2; do
  timeout 90 $C/dllm bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic\|tokens/s" $R/*.txt | sed 's|.*/r/||' | cut -c1-120
cd $OUT && tar czf r.tgz r
