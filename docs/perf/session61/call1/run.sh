#!/usr/bin/env bash
# Session 61's first call, on 01acea0 (tools/gpu-test.sh, stripped and gzipped).
# On an H200: session59/call6's lines, which no H200 has run since lm_head_pick landed: 1. the CUDA
# suite and the fixtures; 2. steps at batch 1, 16, 64 and 128, `--fused-pick false` / on, two
# rounds; 3. `bench generate`, off / on; 4. session 58's knob sweep at batch 64 and 128, as far as
# the time allows.
# On any other card: ncu's source view (per SASS instruction: its stall samples) of one
# qkv_rope_store launch at batch 128 and at 64, and of lm_head_pick at 128 (the same tiles at 92%
# of the GEMM rate), to find where the fused QKV's ~10 us a unit over its products go.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    bash tools/device-suite.sh $R
    pack
    W="off:$C/dllm:--fused-pick false;on:$C/dllm"
    bash tools/ab-ways.sh $R 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
    pack
    bash tools/ab-ways.sh $R/generate 1 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
    pack
    W="default:$C/dllm"
    W+=";graphs256:$C/dllm:--cuda-graph-max-bs 256"
    W+=";m192off:$C/dllm:--moe-gate-up-m192 false"
    W+=";items64:$C/dllm:--moe-item-rows 64"
    W+=";attdeepoff:$C/dllm:--att-deep false"
    W+=";residoff:$C/dllm:--residual-gemm false"
    W+=";default2:$C/dllm"
    timeout $((570 - SECONDS)) bash tools/ab-ways.sh $R/sweep 1 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 64,128
    pack
    echo "total: ${SECONDS}s"
    exit 0
fi
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
# name batch kernel-regex, then the bench's extra options
profile() {
    local name=$1 batch=$2 kern=$3; shift 3
    timeout 150 $NCU --set full --import-source no -k "regex:$kern" --launch-skip 3 --launch-count 1 -o $R/$name -f \
        $C/dllm bench kernels --preset mini --device cuda --batch $batch --prefix 1024 --balanced-router false "$@" > $R/$name-run.txt 2>&1
    echo "$name ncu rc=$?"
    $NCU -i $R/$name.ncu-rep --page source --csv --print-source sass > $R/$name-sass.csv 2> $R/$name-sass.err
    echo "$name source rc=$? $(wc -l < $R/$name-sass.csv) lines"
    $NCU -i $R/$name.ncu-rep --page details > $R/$name-details.txt 2>&1
    grep -E "Duration|SM Active|Elapsed Cycles|Eligible|Issued Warp|Registers" $R/$name-details.txt | head -12
    pack
}
profile qkv128 128 qkv_rope_store --fused-qkv-rope true
profile qkv64 64 qkv_rope_store --fused-qkv-rope true
profile pick128 128 "lm_head_pick$"
echo "total: ${SECONDS}s"
