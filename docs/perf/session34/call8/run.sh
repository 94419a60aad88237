#!/usr/bin/env bash
# Session 34, call 8: call 7's A/B again in the other order (a1030e3's build first in each pair):
# dllm: the attention skipping O's rescale where no max moved (att-skip-rescale.patch, call 7's
# build, tested there); dllm_base: a1030e3's. Prefill 4,096 x 1 five pairs, batch 1 at 1k three.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
gunzip -c $C/dllm_base.gz > /tmp/dllm_base && chmod +x /tmp/dllm_base
M="--preset mini --device cuda --block 32"
for i in 1 2 3 4 5; do
  timeout 40 /tmp/dllm_base bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-base-$i.txt 2>&1
  timeout 40 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-new-$i.txt 2>&1
done
for i in 1 2 3; do
  timeout 40 /tmp/dllm_base bench step $M --prefix 1024 --steps 8 --batch 1 > $R/step-base-$i.txt 2>&1
  timeout 40 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1 > $R/step-new-$i.txt 2>&1
done
for n in base new; do echo "== $n prefill: $(grep -h '^ *4096' $R/prefill-$n-*.txt | awk '{printf "%s ", $4}')  b1: $(grep -h '^ *1 ' $R/step-$n-*.txt | awk '{printf "%s ", $5}')"; done
cd $OUT && tar czf r.tgz r
