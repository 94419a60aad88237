#!/usr/bin/env bash
# Session 29, call 5 (call 4's dllm: 22c6fae's build): moe_route (logits and selection in one launch, a
# cluster of 8 CTAs per 32 rows; moe_permute after) forced at every batch (`--fused-router true`)
# against the rule (cuBLAS logits, moe_router_select, moe_permute from 33 rows), interleaved.
# Never measured above 32 rows before (docs/PERF.md, session 18).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
M="--preset mini --device cuda --block 32"
S="bench step $M --prefix 1024 --steps 8 --batch 4,16,64,128"
for i in 1 2 3; do
  timeout 90 $C/dllm $S --fused-router true > $R/step-fused-$i.txt 2>&1
  timeout 90 $C/dllm $S > $R/step-rule-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
for b in 16 64 128; do
  timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch $b --steps 4 --fused-router true > $R/k-b$b-fused.txt 2>&1
  timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch $b --steps 4 > $R/k-b$b-rule.txt 2>&1
done
grep -H "moe_route\|router\|moe_permute\|sum of" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-80
for i in 1 2; do
  timeout 90 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 --fused-router true > $R/prefill-fused-$i.txt 2>&1
  timeout 90 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 > $R/prefill-rule-$i.txt 2>&1
done
grep -H "^ *4096\|rror" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-120
timeout 120 $C/test_cuda_kernels --test-threads=1 fused_router > $R/router-test.txt 2>&1; grep -h "test result" $R/router-test.txt
cd $OUT && tar czf r.tgz r
