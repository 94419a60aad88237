#!/usr/bin/env bash
# Session 51's third call (optional, after call1 and call2; one H200; `.carry` as call1's plus
# `bash tools/kernel-trace/build.sh`): the kernel timeline of graphed steps (session 49 call3's
# method) for 6b8eafb at batch 64 as it is, at batch 128 graphed (`--cuda-graph-max-bs 256`; every
# earlier batch-128 timeline was of eager steps), and both with the attention's ping-pong: where a
# graphed batch-128 layer spends its time, and what the ping-pong does to block_attention_deep in
# a running step (bench kernels times each launch alone). ~4 min.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=/tmp/bins
mkdir -p $C; gunzip -c .carry/dllm.gz > $C/dllm && chmod +x $C/dllm
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 8"
for run in b64:default b128:graphs b64:pingpong b128:graphs-pingpong; do
  b=${run%%:*}; b=${b#b}; way=${run#*:}
  case $way in
    default) extra= ;;
    graphs) extra="--cuda-graph-max-bs 256" ;;
    pingpong) extra="--att-pingpong true" ;;
    graphs-pingpong) extra="--cuda-graph-max-bs 256 --att-pingpong true" ;;
  esac
  CUDA_INJECTION64_PATH=$PWD/.carry/libkernel_trace.so KERNEL_TRACE_OUT=$R/t.tsv timeout 120 $C/dllm bench step $B --batch $b $extra > $R/traced-b$b-$way.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/t.tsv --steps 4 --gaps 10 > $R/timeline-b$b-$way.txt 2>&1; rm -f $R/t.tsv
  echo "== batch $b $way (${SECONDS}s)"; grep "^ *[0-9]" $R/traced-b$b-$way.txt | cut -c1-100
  sed -n '/layer kind seen [0-9]* times/,/sum of/p' $R/timeline-b$b-$way.txt | head -16 | cut -c1-120
  grep "^step\|middle layer" $R/timeline-b$b-$way.txt | head -5
  pack
done
echo "all: ${SECONDS}s"
