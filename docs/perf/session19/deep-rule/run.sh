#!/usr/bin/env bash
# Session 19, call 3 (13f1204's binary): where block_attention_deep with TMA K/V beats the
# two-CTA kernel. --att-deep true against the rule, interleaved, at prefix 1k (batch 1-128),
# 8k (batch 4, 16), 32k (batch 8, with the split rule at one CTA an SM too), and prefill.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  timeout 80 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 4,16,64,128 > $R/step-1k-rule-$i.txt 2>&1
  timeout 80 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 4,16,64,128 --att-deep true > $R/step-1k-deep-$i.txt 2>&1
  timeout 80 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64,128 --att-deep true --att-ctas-per-sm 1 > $R/step-1k-deep-c1-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-1k-*.txt | sed 's|.*/r/||' | cut -c1-60
for i in 1 2; do
  timeout 80 $C/dllm bench step $M --prefix 8192 --steps 4 --batch 4,16 > $R/step-8k-rule-$i.txt 2>&1
  timeout 80 $C/dllm bench step $M --prefix 8192 --steps 4 --batch 4,16 --att-deep true > $R/step-8k-deep-$i.txt 2>&1
  timeout 80 $C/dllm bench step $M --prefix 8192 --steps 4 --batch 16 --att-deep true --att-ctas-per-sm 1 > $R/step-8k-deep-c1-$i.txt 2>&1
  timeout 80 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 8 --att-deep true --att-ctas-per-sm 1 > $R/step-32k-deep-c1-$i.txt 2>&1
  timeout 80 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 8 --att-deep true > $R/step-32k-deep-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-8k-*.txt $R/step-32k-*.txt | sed 's|.*/r/||' | cut -c1-60
timeout 100 $C/dllm bench prefill --preset mini --device cuda --prompt-len 4096,32736 --batch 1 > $R/prefill-rule.txt 2>&1
timeout 100 $C/dllm bench prefill --preset mini --device cuda --prompt-len 4096,32736 --batch 1 --att-deep true > $R/prefill-deep.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/prefill-*.txt | sed 's|.*/r/||'
timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch 64 --steps 4 > $R/k-b64-rule.txt 2>&1
timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch 64 --steps 4 --att-deep true > $R/k-b64-deep.txt 2>&1
timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch 16 --steps 4 --att-deep true --att-tma false > $R/k-b16-deep-cp.txt 2>&1
grep -H "attention" $R/k-b*.txt | sed 's|.*/r/||'
cd $OUT && tar czf r.tgz r
