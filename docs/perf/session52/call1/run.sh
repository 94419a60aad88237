#!/usr/bin/env bash
# Session 52's second call (the device lent was an H100; `.carry` as session 51's call1, built at
# 6b8eafb). Session 51's call1 ran first (its files in docs/perf/session52/call0): the ping-pong and
# the rope patch moved no step beyond noise, so this call drops them and asks where batch 128 and
# 64 spend a graphed step: the kernel timelines (session 51 call3's method) at batch 64 as it is and
# at batch 128 with --cuda-graph-max-bs 256, `bench kernels` at batch 128 and 64, and bench generate
# (64 requests, 2 tokens a step) with the default and with graphs to 256. ~5 min.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=/tmp/bins
mkdir -p $C; gunzip -c .carry/dllm.gz > $C/dllm && chmod +x $C/dllm
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 8"
for run in b128:graphs b64:default; do
  b=${run%%:*}; b=${b#b}; way=${run#*:}
  extra=; [ $way = graphs ] && extra="--cuda-graph-max-bs 256"
  CUDA_INJECTION64_PATH=$PWD/.carry/libkernel_trace.so KERNEL_TRACE_OUT=$R/t.tsv timeout 120 $C/dllm bench step $B --batch $b $extra > $R/traced-b$b-$way.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/t.tsv --steps 4 --gaps 10 > $R/timeline-b$b-$way.txt 2>&1; rm -f $R/t.tsv
  echo "== batch $b $way (${SECONDS}s)"; grep "^ *[0-9]" $R/traced-b$b-$way.txt | cut -c1-100
  sed -n '/layer kind seen [0-9]* times/,/sum of/p' $R/timeline-b$b-$way.txt | head -24 | cut -c1-120
  grep "^step\|middle layer" $R/timeline-b$b-$way.txt | head -5
  pack
done
for n in 128 64; do
  timeout 90 $C/dllm bench kernels --preset mini --device cuda --prefix 1024 --batch $n > $R/kernels-b$n.txt 2>&1
  echo "kernels b$n rc=$? ${SECONDS}s"; cut -c1-170 $R/kernels-b$n.txt | tail -40
  pack
done
for way in default graphs; do
  extra=; [ $way = graphs ] && extra="--cuda-graph-max-bs 256"
  timeout 60 $C/dllm bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 $extra \
      --json $R/generate-$way.json > $R/generate-$way.txt 2>&1
  echo "generate $way rc=$? ${SECONDS}s"; grep -h "tokens/s\|rror\|warning" $R/generate-$way.txt | cut -c1-200
  pack
done
echo "total: ${SECONDS}s"
pack
