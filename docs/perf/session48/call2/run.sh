#!/usr/bin/env bash
# Session 48's second device call. `.carry` from `bash tools/carry-ab.sh 8dc3704` at 35b3382 plus
# `bash tools/kernel-trace/build.sh`. What each kernel of a batch-64 and a batch-128 step takes as
# the step runs (graph replays, programmatic overlaps), at realistic routing: the kernel timeline
# of mini's steps (prefix 1024), `bench kernels` at the same batches, and tools/profile.sh ncu at
# batch 64 (d37944d: the "step" range no longer holds the prefill chunks; first run on a GPU).
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
OUT=$R/ncu BATCH=64 LAUNCHES=60 DLLM_BIN=$C/dllm timeout 200 bash tools/profile.sh ncu > $R/ncu-b64.txt 2>&1
echo "ncu rc=$? (${SECONDS}s)"; tail -3 $R/ncu-b64.txt
head -70 $R/ncu/dllm-step-kernels.csv | cut -c1-220
pack
