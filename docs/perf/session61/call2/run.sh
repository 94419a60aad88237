#!/usr/bin/env bash
# Session 61's second call: qkv_rope_store with its rows described by the producers (each row's
# position and K/V row, looked up by the producer warpgroup after it issues a unit's first stage;
# before, both consumer warpgroups waited for tok_pos and then the page table before every unit's
# k-steps), and its second consumer warpgroup `--fused-qkv-rope-lag N` k-steps behind the first
# (their epilogues at different times). .carry/dllm is that build, .carry/dllm-base 01acea0's
# (both stripped and gzipped).
# 1. the fused kernel's test (now also six works a CTA: the row slots reused; lags 0, 2, 4), the
# pick's, graph replay. On an H200 then: 2. the lines, session59/call6's steps at batch 1, 16, 64
# and 128 (`--fused-pick false` / on, two rounds) and `bench generate`. On any card, as time
# allows: 3. `bench kernels` at batch 128 and 64 (routers as drawn: the QKV does not depend on
# them): base fused / rows fused at lags 0, 1, 2, 4 / cuBLAS + rope; 4. steps at batch 64 and
# 128: cuBLAS + rope / rows / rows at lag 2, two rounds; 5. ncu's source view of the rows form at
# 128, lag 0.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
gunzip -f $C/dllm.gz $C/dllm-base.gz
bash tools/cuda-tests.sh $R/tests qkv_rope_store_fused_matches_cpu lm_head_pick_forms_match_cpu cuda_graph_replay_equals_eager
rc=$?
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; grep -h -B2 -A12 "panicked" $R/tests/cuda-tests.txt | head -60; pack; exit 1; }
pack
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    W="off:$C/dllm:--fused-pick false;on:$C/dllm"
    bash tools/ab-ways.sh $R 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
    pack
    bash tools/ab-ways.sh $R/generate 1 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
    pack
fi
F="$C/dllm:--fused-qkv-rope true"
W="base:$C/dllm-base:--fused-qkv-rope true;rows:$F;lag1:$F --fused-qkv-rope-lag 1;lag2:$F --fused-qkv-rope-lag 2;lag4:$F --fused-qkv-rope-lag 4;off:$C/dllm"
for b in 128 64; do
    [ $SECONDS -gt 400 ] && break
    bash tools/ab-ways.sh $R/kernels-b$b 1 "$W" kernels --preset mini --device cuda --prefix 1024 --batch $b --balanced-router false
    grep -h "qkv\|rope" $R/kernels-b$b/*.txt | tr -s ' ' | cut -c1-110
    pack
done
W="off:$C/dllm;rows:$F;lag2:$F --fused-qkv-rope-lag 2"
[ $SECONDS -lt 360 ] && timeout $((560 - SECONDS)) bash tools/ab-ways.sh $R 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 64,128
pack
if [ $SECONDS -lt 480 ]; then
    NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
    timeout $((580 - SECONDS)) $NCU --set full --import-source no -k "regex:qkv_rope_store" --launch-skip 3 --launch-count 1 -o $R/rows128 -f \
        $C/dllm bench kernels --preset mini --device cuda --batch 128 --prefix 1024 --balanced-router false --fused-qkv-rope true > $R/rows128-run.txt 2>&1
    echo "ncu rc=$?"
    $NCU -i $R/rows128.ncu-rep --page source --csv --print-source sass > $R/rows128-sass.csv 2> $R/rows128-sass.err
    $NCU -i $R/rows128.ncu-rep --page details > $R/rows128-details.txt 2>&1
    grep -E "Duration|SM Active|Elapsed Cycles|Eligible|Issued Warp" $R/rows128-details.txt | head -8
    pack
fi
echo "total: ${SECONDS}s"
