#!/usr/bin/env bash
# Session 49's third call: session 48's call2 (the kernel timeline of batch-64 and batch-128 steps
# at realistic routing, and `bench kernels` at both) on an H200, without its ncu part: where the
# H200's batch-64 step (1.88x) and batch-128 step (2.15x) spend what is not the expert stream.
# `.carry` as call2's plus `bash tools/kernel-trace/build.sh`. ~3 minutes.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 8"
for b in 64 128; do
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/t.tsv timeout 120 $C/dllm bench step $B --batch $b > $R/traced-b$b.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/t.tsv --steps 4 --gaps 10 > $R/timeline-b$b.txt 2>&1; rm -f $R/t.tsv
  echo "== batch $b (${SECONDS}s)"; grep "^ *[0-9]" $R/traced-b$b.txt | cut -c1-100
  sed -n '/layer kind seen [0-9]* times/,/sum of/p' $R/timeline-b$b.txt | head -40 | cut -c1-120
  grep "^step" $R/timeline-b$b.txt | head -4
  pack
done
for b in 64 128; do
  timeout 120 $C/dllm bench kernels --preset mini --device cuda --prefix 1024 --batch $b > $R/kernels-b$b.txt 2>&1
  echo "== kernels batch $b (${SECONDS}s)"; cut -c1-120 $R/kernels-b$b.txt | tail -30
  pack
done
echo "all: ${SECONDS}s"
