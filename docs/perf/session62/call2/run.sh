#!/usr/bin/env bash
# Session 62's second call (its first script, never run, is in git history). .carry/dllm is
# d131681's build: qkv_rope_store's epilogue stores whole 8-column groups (quad_transpose, 16-byte
# stores; session 61's source view had the LSU queue, `lg`, as its epilogue's most sampled
# stall). .carry/dllm-pdl is call1's (1bba78f: 4-byte pairs, launched as the norm's programmatic
# dependent, as this build is). The default path (fused off) is db8b4b5's in both. Stripped, gzipped.
# (Cut to ~400 s before it ran: two failed starts left ~780 s of device time.)
# 1. The whole CUDA suite and the fixtures, memcheck of the fused kernel's test; the benchmarks only
#    if the suite passes. On an H200: the lines (steps at batch 1, 16, 64 and 128, two
#    rounds; `bench generate`).
# Then on any card: 2. `bench kernels` at batch 128 and 64: fused (this build, call1's) / cuBLAS +
#    rope; 3. steps at batch 64 and 128, plain / fused / fused pdl, two rounds; 4. a 4,096 x 8
#    prefill, plain / fused; 5. `bench generate`, plain / fused from 4,096 rows.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
gunzip -f $C/dllm.gz $C/dllm-pdl.gz
bash tools/device-suite.sh $R/tests qkv_rope_store_fused_matches_cpu
grep -q "^rc=0" $R/tests/cuda-tests.txt; rc=$?
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; grep -h -B2 -A12 "panicked" $R/tests/cuda-tests.txt | head -60; pack; exit 1; }
pack
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
Q="--fused-qkv-rope true"
F="--fused-qkv-rope true --fused-qkv-rope-min-rows 4096"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    bash tools/ab-ways.sh $R/lines 2 "now:$C/dllm" step $M --batch 1,16,64,128
    pack
    bash tools/ab-ways.sh $R/generate-h200 1 "now:$C/dllm" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
    pack
fi
W="fused:$C/dllm:$Q;fusedpdl:$C/dllm-pdl:$Q;plain:$C/dllm"
for b in 128 64; do
    bash tools/ab-ways.sh $R/kernels-b$b 1 "$W" kernels --preset mini --device cuda --prefix 1024 --batch $b --balanced-router false
    for f in $R/kernels-b$b/*.txt; do echo "$(basename $f) $(grep -h 'qkv_rope_store\|cublas qkv \|qk_norm_rope' $f | tr -s ' ' | cut -d' ' -f1,2,9 | tr '\n' ' ')"; done
done
pack
rounds=2; [ $SECONDS -gt 250 ] && rounds=1
bash tools/ab-ways.sh $R/steps $rounds "plain:$C/dllm;fused:$C/dllm:$Q;fusedpdl:$C/dllm-pdl:$Q" step $M --batch 64,128
pack
for i in 1; do
    [ $SECONDS -gt 330 ] && break
    for way in plain fused; do
        o=; [ $way = fused ] && o=$F
        timeout 90 $C/dllm bench prefill --preset mini --device cuda --prompt-len 4096 --batch 8 $o \
            --json $R/prefill-$way-$i.json > $R/prefill-$way-$i.txt 2>&1
        echo "prefill 4096x8 $way $i rc=$? (${SECONDS}s) $(grep -E '^ +[0-9]' $R/prefill-$way-$i.txt | cut -c1-120)"
    done
done
pack
timeout $((420 - SECONDS)) bash tools/ab-ways.sh $R/generate 1 "plain:$C/dllm;fused:$C/dllm:$F" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
echo "total: ${SECONDS}s"
