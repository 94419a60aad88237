#!/usr/bin/env bash
# Session 68 call1: every `bench step` knob at batch 16, 64 and 128, at realistic routing, on the
# card drawn (session 49's call4 sweep was prepared for an H200 and drew an H100; the knobs added
# since, the fused QKV-rope, the fused pick, graphs past batch 64, gate_up's 192-row units, and
# sampled decoding, are in it too). The default first, in the middle and last; each knob once.
# Then, on an H200 only, the ncu of the timed steps' expert tiles (session 66's call3, session 67's
# call2). .carry/dllm is 3f36ed5's build (src/ and csrc/ as at 46b1e2c).
set -uo pipefail
source tools/device-call.sh
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 16,64,128"
run() {  # name, then the knob's flags
    local name=$1; shift
    timeout 60 $C/dllm bench step $M "$@" --json $R/step-$name.json > $R/step-$name.txt 2>&1
    echo "== $name ($*) rc=$? ${SECONDS}s"
    grep -E '^ +[0-9]+ (random|mask) ' $R/step-$name.txt | awk '{printf "b%s %s %sx  ", $1, $5, $11}'; echo
}
run default-1
run item-rows-64 --moe-item-rows 64
run ws-tiles-off --moe-ws-tiles false
run m192-off --moe-gate-up-m192 false
run att-deep-off --att-deep false
run att-tma-off --att-tma false
run att-ctas-2 --att-ctas-per-sm 2
pack
run default-2
run shared-items-0 --shared-expert-items 0
run fused-moe-norm-off --fused-moe-norm false
run expert-pdl-off --expert-pdl false
run fused-qkv-rope-off --fused-qkv-rope false
run fused-qkv-rope-512 --fused-qkv-rope-min-rows 512
run fused-pick-off --fused-pick false
run graphs-256 --cuda-graph-max-bs 256
run sampled --temperature 0.7 --top-p 0.9
run default-3
pack
echo "sweep: ${SECONDS}s"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    bash tools/ncu-expert-tiles.sh $R $C/dllm $((SECONDS + 200)) 110
fi
pack
echo "total: ${SECONDS}s"
