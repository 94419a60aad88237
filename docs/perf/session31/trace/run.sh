#!/usr/bin/env bash
# Session 31, call 1: the kernel timeline of the step as it runs (CUDA graph replays, the
# programmatic launches overlapping), by the CUPTI injection library of tools/kernel-trace/.
# Each line's steps untraced first (what tracing costs), then traced; timeline.py's tables.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
M="--preset mini --device cuda --block 32"
trace() {  # name, then the dllm arguments
  local n=$1; shift
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/$n.tsv timeout 120 $C/dllm "$@" > $R/$n-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/$n.tsv --steps 4 > $R/$n-timeline.txt 2>&1
  gzip -f $R/$n.tsv
}
for b in 1 16; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch $b > $R/b$b-plain.txt 2>&1
  trace b$b bench step $M --prefix 1024 --steps 8 --batch $b
done
for b in 4 64; do trace b$b bench step $M --prefix 1024 --steps 8 --batch $b; done
timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1 > $R/k32-plain.txt 2>&1
trace k32 bench step $M --prefix 32736 --steps 8 --batch 1
trace prefill bench prefill $M --prompt-len 4096 --batch 1
grep -H "^ *[0-9]\|rror\|panic\|kernel_trace" $R/*-plain.txt $R/*-traced.txt | sed 's|.*/r/||' | cut -c1-110
for f in $R/*-timeline.txt; do echo "== $f"; head -40 $f; done
cd $OUT && tar czf r.tgz r
