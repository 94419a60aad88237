#!/usr/bin/env bash
# Session 61's fifth call, on the session's final kernels: qkv_rope_store with the walked x copies
# and 01acea0's epilogue (call4: the producers' row lookups measured level, so they are gone);
# lm_head_pick byte-identical to 01acea0's. .carry/dllm is this build (stripped and gzipped).
# On an H200 first: the lines (steps at batch 1, 16, 64 and 128, two rounds; `bench generate`).
# Then on any card: 1. the whole CUDA suite and the fixtures; 2. memcheck of the fused test and
# the pick's; 3. `bench kernels` at batch 128 and 64 (routers as drawn), fused / cuBLAS + rope.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
gunzip -f $C/dllm.gz
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    bash tools/ab-ways.sh $R/lines 2 "final:$C/dllm" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
    pack
    bash tools/ab-ways.sh $R/generate 1 "final:$C/dllm" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
    pack
fi
bash tools/device-suite.sh $R qkv_rope_store_fused_matches_cpu lm_head_pick_forms_match_cpu
pack
W="on:$C/dllm:--fused-qkv-rope true;off:$C/dllm"
for b in 128 64; do
    [ $SECONDS -gt 500 ] && break
    bash tools/ab-ways.sh $R/kernels-b$b 1 "$W" kernels --preset mini --device cuda --prefix 1024 --batch $b --balanced-router false
    for f in $R/kernels-b$b/*.txt; do echo "$(basename $f) $(grep -h 'qkv_rope_store\|cublas qkv \|qk_norm_rope\|lm_head_pick ' $f | tr -s ' ' | cut -d' ' -f1,2,9 | tr '\n' ' ')"; done
    pack
done
echo "total: ${SECONDS}s"
