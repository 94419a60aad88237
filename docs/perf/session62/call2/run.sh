#!/usr/bin/env bash
# Session 62's second call, on call1's binaries (.carry/dllm: 1bba78f, qkv_rope_store as the input
# norm's programmatic dependent; .carry/dllm-base: db8b4b5). Call1 (H100) had the fused kernel at
# batch 64 ~6 us a layer behind cuBLAS + the rope kernel and at batch 128 ~10 us ahead, its steps
# within two rounds' spread. So: is the fused kernel worth having on from 4,096 rows (batch 128
# steps and prefill forwards, `--fused-qkv-rope-min-rows 4096`)?
# On an H200 first: the lines (steps at batch 1, 16, 64 and 128, two rounds; `bench generate`).
# Then on any card: 1. steps at batch 128, plain / fused / fused base, four rounds; 2. a 4,096 x 8
# prefill, plain / fused, two rounds; 3. `bench generate`, plain / fused from 4,096 rows, two rounds.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
gunzip -f $C/dllm.gz $C/dllm-base.gz
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
F="--fused-qkv-rope true --fused-qkv-rope-min-rows 4096"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    bash tools/ab-ways.sh $R/lines 2 "now:$C/dllm" step $M --batch 1,16,64,128
    pack
    bash tools/ab-ways.sh $R/generate-h200 1 "now:$C/dllm" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
    pack
fi
bash tools/ab-ways.sh $R/steps 4 "plain:$C/dllm;fused:$C/dllm:$F;fusedbase:$C/dllm-base:$F" step $M --batch 128
pack
for i in 1 2; do
    for way in plain fused; do
        o=; [ $way = fused ] && o=$F
        timeout 90 $C/dllm bench prefill --preset mini --device cuda --prompt-len 4096 --batch 8 $o \
            --json $R/prefill-$way-$i.json > $R/prefill-$way-$i.txt 2>&1
        echo "prefill 4096x8 $way $i rc=$? (${SECONDS}s) $(grep -E '^ +[0-9]' $R/prefill-$way-$i.txt | cut -c1-120)"
    done
done
pack
timeout $((585 - SECONDS)) bash tools/ab-ways.sh $R/generate 2 "plain:$C/dllm;fused:$C/dllm:$F" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
echo "total: ${SECONDS}s"
