#!/usr/bin/env bash
# Session 61's fourth call. Call3's walked x copies made qkv_rope_store 3-6% faster and
# lm_head_pick 8-9% slower, so dense_ws_tiles now takes the form from its caller: lm_head_pick
# keeps 01acea0's (its sm_90a .text byte-identical to 01acea0's), qkv_rope_store walks. The lag is
# gone (no gain in any form). .carry/dllm is this build; .carry/dllm-norows the same with
# qkv_rope_store's row lookups back in the consumers' prepare (01acea0's epilogue, to measure the
# producers' rows alone); .carry/dllm-base 01acea0's. All stripped and gzipped.
# 1. the fused kernel's test, the pick's, graph replay. On an H200 then: 2. the lines (steps at
# batch 1, 16, 64 and 128, two rounds, and `bench generate`; this build's default path is
# 01acea0's kernels). On any card, as time allows: 3. `bench kernels` at batch 128 and 64 (routers
# as drawn): base fused / rows fused / norows fused / cuBLAS + rope; 4. steps at batch 64 and 128:
# base (its default) / cuBLAS + rope / rows fused / norows fused, two rounds.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
gunzip -f $C/dllm.gz $C/dllm-base.gz $C/dllm-norows.gz
bash tools/cuda-tests.sh $R/tests qkv_rope_store_fused_matches_cpu lm_head_pick_forms_match_cpu cuda_graph_replay_equals_eager
rc=$?
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; grep -h -B2 -A12 "panicked" $R/tests/cuda-tests.txt | head -60; pack; exit 1; }
pack
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    bash tools/ab-ways.sh $R/lines 2 "new:$C/dllm" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
    pack
    bash tools/ab-ways.sh $R/generate 1 "new:$C/dllm" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
    pack
fi
Q="--fused-qkv-rope true"
W="base:$C/dllm-base:$Q;rows:$C/dllm:$Q;norows:$C/dllm-norows:$Q;off:$C/dllm"
for b in 128 64; do
    [ $SECONDS -gt 400 ] && break
    bash tools/ab-ways.sh $R/kernels-b$b 1 "$W" kernels --preset mini --device cuda --prefix 1024 --batch $b --balanced-router false
    for f in $R/kernels-b$b/*.txt; do echo "$(basename $f) $(grep -h 'qkv_rope_store\|cublas qkv \|qk_norm_rope\|lm_head_pick ' $f | tr -s ' ' | cut -d' ' -f1,2,9 | tr '\n' ' ')"; done
    pack
done
W="base:$C/dllm-base;off:$C/dllm;rows:$C/dllm:$Q;norows:$C/dllm-norows:$Q"
[ $SECONDS -lt 380 ] && timeout $((580 - SECONDS)) bash tools/ab-ways.sh $R/steps 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 64,128
pack
echo "total: ${SECONDS}s"
