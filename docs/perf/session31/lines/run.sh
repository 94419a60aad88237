#!/usr/bin/env bash
# Session 31, call 4: the lines of the landed code (509d10a: the router's and the attention's
# buffers before the kernels whose programmatic dependents they are), and moe_route forced at
# batch 16 and 32 (`--fused-router true`: with its edge to the norm now kept, does it beat cuBLAS's
# logits + moe_router_select + moe_permute there?), interleaved with the default rule.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
M="--preset mini --device cuda --block 32"
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,32 > $R/b16-rule-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,32 --fused-router true > $R/b16-fused-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/b16-*.txt | sed 's|.*/r/||' | cut -c1-80
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16 > $R/step-$i.txt 2>&1
  timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1,8 > $R/step-32k-$i.txt 2>&1
done
for i in 1 2; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64,128 > $R/wide-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 --temperature 0.7 --top-p 0.9 > $R/sampled-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 > $R/greedy-$i.txt 2>&1
done
timeout 200 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 > $R/prefill-4096.txt 2>&1
timeout 90 $C/dllm bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate.txt 2>&1
grep -H "^ *[0-9]\|rror\|panic\|tokens/s" $R/step-*.txt $R/wide-*.txt $R/sampled-*.txt $R/greedy-*.txt $R/prefill-*.txt $R/generate.txt | sed 's|.*/r/||' | cut -c1-80
cd $OUT && tar czf r.tgz r
