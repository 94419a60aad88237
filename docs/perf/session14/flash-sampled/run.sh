#!/usr/bin/env bash
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
B="$C/dllm_base bench step --device cuda --block 32 --prefix 1024"
timeout 100 $B --preset flash --quantization fp8 --batch 1,4,16 --steps 8 > $R/step-flash-fp8.txt 2>&1
timeout 100 $B --preset flash --quantization fp8 --batch 1,4,16 --steps 8 --att-deep false > $R/step-flash-fp8-off.txt 2>&1
timeout 60 $B --preset mini --batch 1,16,64 --steps 8 --temperature 0.7 --top-p 0.9 > $R/step-sampled.txt 2>&1
grep -H "^ *[0-9]" $R/*.txt | sed 's|.*/r/||' | cut -c1-130
cd $OUT && tar czf r.tgz r
