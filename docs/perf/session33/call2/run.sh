#!/usr/bin/env bash
# Session 33, call 2 (b94e2ca plus the trace's memcpy/memset records): the PyTorch baseline
# (tools/baseline_torch.py --variants triton --mask-frac 0, its fastest variant in sessions 14-27)
# at every batch of the issue, our step with it attached (same call, same card); then traces of a
# 4,096-token prefill (eager) and a batch-64 step (graph) with their longest idle stretches.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
timeout 330 python3 tools/baseline_torch.py --preset mini --batch 1,4,16,64,128 --prefix 1024 --block 32 \
    --warmup 10 --iters 50 --variants triton --mask-frac 0 --json "$R/baseline-mini-mf0.json" > "$R/baseline-mini-mf0.log" 2>&1
echo "baseline rc=$?"; tail -n 8 "$R/baseline-mini-mf0.log"
B=$([ -s "$R/baseline-mini-mf0.json" ] && echo "--baseline $R/baseline-mini-mf0.json")
timeout 120 $C/dllm bench step --preset mini --device cuda --batch 1,4,16,64,128 --prefix 1024 --block 32 --steps 16 \
    --tokens random $B --json "$R/step-mini.json" > "$R/step-mini.txt" 2>&1
cut -c1-150 "$R/step-mini.txt"
M="--preset mini --device cuda --block 32"
trace() {  # name, then the dllm arguments
  local n=$1; shift
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/$n.tsv timeout 120 $C/dllm "$@" > $R/$n-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/$n.tsv --steps 4 --gaps 12 > $R/$n-timeline.txt 2>&1
  gzip -f $R/$n.tsv
}
trace prefill bench prefill $M --prompt-len 4096 --batch 1
trace b64 bench step $M --prefix 1024 --steps 8 --batch 64
for n in prefill b64; do sed -n 1,32p $R/$n-timeline.txt | cut -c1-140; done
cd $OUT && tar czf r.tgz r
