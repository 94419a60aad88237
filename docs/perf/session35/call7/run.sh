#!/usr/bin/env bash
# Session 35, call 7 (a diagnostic, 5543605's build): where a sampled batch-64 step spends the
# ~1 ms it takes over a greedy one when sample_rows costs only ~0.73 ms more than row_argmax.
# Traced greedy and sampled (temperature 0.7, top-p 0.9) batch-64 steps: the layer tables, the
# step spans and the longest idle stretches.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 64"
S="--temperature 0.7 --top-p 0.9"
for m in greedy sampled; do
  F=""; [ $m = sampled ] && F="$S"
  timeout 60 $C/dllm bench step $M $F > $R/$m-plain.txt 2>&1
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/$m.tsv timeout 60 $C/dllm bench step $M $F > $R/$m-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/$m.tsv --steps 4 --gaps 6 > $R/$m-timeline.txt 2>&1
  gzip $R/$m.tsv
  echo "== $m"; grep -h "^ *64" $R/$m-plain.txt | cut -c1-60; grep -h "^step\|stretches" $R/$m-timeline.txt | head -10
done
grep -l "rror\|panic" $R/*.txt
cd $OUT && tar czf r.tgz r
