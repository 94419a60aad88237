#!/usr/bin/env bash
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
true
true
for b in dllm dllm_c4; do for n in 16 64; do
  timeout 80 $C/$b bench kernels --preset mini --device cuda --batch $n --prefix 1024 --steps 4 --temperature 0.7 --top-p 0.9 > $R/k-$b-b$n.txt 2>&1
  grep -H "sample_rows\|row_argmax\|sum of" $R/k-$b-b$n.txt | sed 's|.*/r/||'
done; done
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,16,64"
for i in 1 2; do
for b in dllm dllm_c4 dllm_base; do
  timeout 80 $C/$b $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-$b-$i.txt 2>&1
done
timeout 80 $C/dllm $S > $R/step-greedy-dllm-$i.txt 2>&1
done
grep -H "^ *[0-9]" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-70
cd $OUT && tar czf r.tgz r
