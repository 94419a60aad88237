#!/usr/bin/env bash
# Session 15, call 2: ncu of one sample_rows launch of a sampled step (temperature 0.7, top-p
# 0.9), the first two-pass build (dllm) against 2be130a's (dllm_base).
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
for b in dllm dllm_base; do
  for n in 16 64; do
    timeout 150 ncu --kernel-name sample_rows --launch-skip 3 --launch-count 1 --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
      $C/$b bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 4 --batch $n --temperature 0.7 --top-p 0.9 --disable-cuda-graph > $R/ncu-$b-b$n.txt 2>&1
  done
done
cd $OUT && tar czf r.tgz r
