#!/usr/bin/env bash
# Session 63's second call. .carry/dllm is this session's build: the attention's CTAs take a tile's
# KV heads one after another (att_tile: grid (tiles, heads, splits) walked heads fastest), so the
# four heads' CTAs of a tile run together and read each pool row (every head of a position side by
# side, 1 KB a layer's K or V) whole at about the same time; before, with the tiles fastest, a row
# was read 256 bytes at a time by CTAs a wave apart. .carry/dllm-base is 4f58858's (call1's). Both
# stripped and gzipped. The test binaries are this build's.
# 1. The attention tests (every variant against the CPU), graph replay, the fused QKV lockstep
#    forward and the fixtures; the benchmarks only if they pass.
# 2. `bench kernels` at batch 64 and 128: base / new.
# 3. Steps at batch 1, 16, 64, 128 (prefix 1024), base / new, two interleaved rounds; at prefix
#    32,736 batch 1 and 8, one round. 4. A 4,096 x 8 prefill, base / new, one round.
# (Cut to ~250 s before it ran: five failed starts left ~850 s of device time.)
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
gunzip -f $C/dllm.gz $C/dllm-base.gz
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv,noheader
bash tools/cuda-tests.sh $R/tests attention_variants_match_cpu cuda_graph_replay_equals_eager fused_qkv_rope_forward_lockstep_matches_cpu
rc=$?
bash tools/unpack-tests.sh test_model_vs_fixtures
timeout 60 /tmp/test_model_vs_fixtures > $R/tests/fixtures.txt 2>&1; frc=$?; echo "rc=$frc" >> $R/tests/fixtures.txt
grep -h "test result" $R/tests/fixtures.txt
[ $rc -ne 0 ] || [ $frc -ne 0 ] && { echo "tests failed: no benchmarks"; grep -h -B2 -A12 "panicked" $R/tests/*.txt | head -60; pack; exit 1; }
pack
W="base:$C/dllm-base;new:$C/dllm"
for run in b64:1024 b128:1024; do
    b=${run%%:*}; pre=${run#*:}
    for way in base new; do
        bin=$C/dllm; [ $way = base ] && bin=$C/dllm-base
        timeout 120 $bin bench kernels --preset mini --device cuda --prefix $pre --batch ${b#b} > $R/kernels-$b-$pre-$way.txt 2>&1
        echo "kernels $b prefix $pre $way rc=$? $(grep -h 'block_attention\|attention_combine' $R/kernels-$b-$pre-$way.txt | tr -s ' ' | cut -d' ' -f1,2,9 | tr '\n' ' ') $(grep -h 'sum of kernel times' $R/kernels-$b-$pre-$way.txt | cut -c1-40)"
    done
done
pack
M="--preset mini --device cuda --block 32 --steps 16"
bash tools/ab-ways.sh $R/steps 2 "$W" step $M --prefix 1024 --batch 1,16,64,128
pack
bash tools/ab-ways.sh $R/steps32k 1 "$W" step --preset mini --device cuda --block 32 --steps 8 --prefix 32736 --batch 1,8
pack
for i in 1; do
    for way in base new; do
        [ $SECONDS -gt 400 ] && break
        bin=$C/dllm; [ $way = base ] && bin=$C/dllm-base
        timeout 60 $bin bench prefill --preset mini --device cuda --prompt-len 4096 --batch 8 \
            --json $R/prefill-$way-$i.json > $R/prefill-$way-$i.txt 2>&1
        echo "prefill 4096x8 $way $i rc=$? (${SECONDS}s) $(grep -E '^ +[0-9]' $R/prefill-$way-$i.txt | cut -c1-120)"
    done
done
pack
echo "total: ${SECONDS}s"
