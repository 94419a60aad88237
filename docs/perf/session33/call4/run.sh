#!/usr/bin/env bash
# Session 33, call 4: the batch-64 graph's idle stretch before layer 0's gate_up (after cuBLAS's
# 4-byte memset). Is it there with cuBLAS given no workspace (dllm_ws0: no memset)? And batch-64
# steps with and without CUDA graphs (dllm: call 3's build, the MLP scratch patch applied).
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
gunzip -c $C/dllm_ws0.gz > /tmp/dllm_ws0 && chmod +x /tmp/dllm_ws0
M="--preset mini --device cuda --block 32"
trace() {  # name, binary, then the dllm arguments
  local n=$1 bin=$2; shift 2
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/$n.tsv timeout 120 $bin "$@" > $R/$n-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/$n.tsv --steps 4 --gaps 4 > $R/$n-timeline.txt 2>&1
  gzip -f $R/$n.tsv
}
trace b64-ws0 /tmp/dllm_ws0 bench step $M --prefix 1024 --steps 8 --batch 64
trace b64-eager $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64 --disable-cuda-graph
for n in b64-ws0 b64-eager; do echo "== $n"; sed -n 1,12p $R/$n-timeline.txt | cut -c1-140; done
for i in 1 2; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 32,64 > $R/step-graph-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 32,64 --disable-cuda-graph > $R/step-eager-$i.txt 2>&1
  timeout 60 /tmp/dllm_ws0 bench step $M --prefix 1024 --steps 8 --batch 32,64 > $R/step-ws0-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
cd $OUT && tar czf r.tgz r
