#!/usr/bin/env bash
# Session 61's third call. Call2's ncu source view (H100, qkv_rope_store at batch 128) put the
# producer warpgroup at ~87% busy and the consumers waiting on stages for 17% of their k-steps:
# the producers' x copies took ~180 instructions a stage (the base pointer reloaded from constant
# memory for each copy, spills at 56 registers). Now one pointer walked 16 rows at a time with
# fixed destination offsets: ~106 instructions (lm_head_pick's, same tiles: 137 -> 102, no
# spills). .carry/dllm is that build; .carry/dllm-base 01acea0's (both stripped and gzipped).
# 1. the fused kernel's test (the 4,352-token case now inside its angle table), the pick's,
# graph replay, mid's ops. On an H200 then: 2. the lines (steps at batch 1, 16, 64 and 128 and
# `bench generate`, base / new). On any card, as time allows: 3. `bench kernels` at batch 128
# and 64 (routers as drawn): base fused / new fused at lags 0, 1, 2 / new cuBLAS + rope (every
# run also has lm_head_pick, base against new); 4. steps at batch 64 and 128: base (its default) /
# new default / new fused / new fused lag 2, two rounds.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
gunzip -f $C/dllm.gz $C/dllm-base.gz
bash tools/cuda-tests.sh $R/tests qkv_rope_store_fused_matches_cpu lm_head_pick_forms_match_cpu cuda_graph_replay_equals_eager mid_shape_ops_match_cpu
rc=$?
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; grep -h -B2 -A12 "panicked" $R/tests/cuda-tests.txt | head -60; pack; exit 1; }
pack
F="$C/dllm:--fused-qkv-rope true"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    W="base:$C/dllm-base;new:$C/dllm"
    bash tools/ab-ways.sh $R 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
    pack
    bash tools/ab-ways.sh $R/generate 1 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
    pack
fi
W="base:$C/dllm-base:--fused-qkv-rope true;new:$F;lag1:$F --fused-qkv-rope-lag 1;lag2:$F --fused-qkv-rope-lag 2;off:$C/dllm"
for b in 128 64; do
    [ $SECONDS -gt 380 ] && break
    bash tools/ab-ways.sh $R/kernels-b$b 1 "$W" kernels --preset mini --device cuda --prefix 1024 --batch $b --balanced-router false
    for f in $R/kernels-b$b/*.txt; do echo "$(basename $f) $(grep -h 'qkv_rope_store\|cublas qkv \|qk_norm_rope\|lm_head_pick ' $f | tr -s ' ' | cut -d' ' -f1,2,9 | tr '\n' ' ')"; done
    pack
done
W="base:$C/dllm-base;off:$C/dllm;on:$F;lag2:$F --fused-qkv-rope-lag 2"
[ $SECONDS -lt 360 ] && timeout $((580 - SECONDS)) bash tools/ab-ways.sh $R/steps 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 64,128
pack
echo "total: ${SECONDS}s"
