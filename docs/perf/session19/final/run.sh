#!/usr/bin/env bash
# Session 19, last call (120f93a's binary, the landed code): flash with fp8 experts on one H200
# (the deep kernel's TMA form takes its attention now) against --att-tma false (the old rule),
# sampled against greedy steps, and bench generate.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
F="bench step --preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16"
timeout 150 $C/dllm $F > $R/step-flash-fp8.txt 2>&1
timeout 150 $C/dllm $F --att-tma false > $R/step-flash-fp8-cp.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/step-flash*.txt | sed 's|.*/r/||' | cut -c1-110
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,16,64"
for i in 1 2; do
  timeout 60 $C/dllm $S > $R/step-greedy-$i.txt 2>&1
  timeout 60 $C/dllm $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-greedy-*.txt $R/step-sampled-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 150 $C/dllm bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate-mini-64.txt 2>&1
tail -6 $R/generate-mini-64.txt
cd $OUT && tar czf r.tgz r
