#!/usr/bin/env bash
# Session 64's first call: session 63's call3, which never ran, with steps added.
# .carry/dllm is e71da40 + session63/call3/merge-rounds.patch (lm_head_pick_merge issues a lane's
# parts' loads LM_PICK_MERGE_ROUND at a time before combining them; it was a chain of dependent
# loads, ~10 us a call at 28% of the copy rate at batch 64 on session 63's H200). .carry/dllm-base
# is 4f58858's build (e71da40's sm_90a cubins are byte-identical to it). The test binaries are the
# patched build's.
# 1. lm_head_pick_forms_match_cpu (now also over a 70,000-word vocabulary: two rounds a lane),
#    graph replay and the fixtures; the benchmarks only if they pass.
# 2. `bench kernels` at batch 64 and 128, base / new: the merge's row.
# 3. Steps at batch 64 and 128, two interleaved rounds: base / new / new with graphs to 256
#    (SGLang's default on H100/H200 below TP 4; ours 64, session 52) on an H200 only.
# 4. `bench generate`, base / new, one round.
set -uo pipefail
source tools/device-call.sh
bash tools/cuda-tests.sh $R/tests lm_head_pick_forms_match_cpu cuda_graph_replay_equals_eager
rc=$?
bash tools/unpack-tests.sh test_model_vs_fixtures
timeout 60 /tmp/test_model_vs_fixtures > $R/tests/fixtures.txt 2>&1; frc=$?; echo "rc=$frc" >> $R/tests/fixtures.txt
grep -h "test result" $R/tests/fixtures.txt
[ $rc -ne 0 ] || [ $frc -ne 0 ] && { echo "tests failed: no benchmarks"; grep -h -B2 -A12 "panicked" $R/tests/*.txt | head -60; pack; exit 1; }
for b in 64 128; do
    for way in base new; do
        bin=$C/dllm; [ $way = base ] && bin=$C/dllm-base
        timeout 90 $bin bench kernels --preset mini --device cuda --prefix 1024 --batch $b > $R/kernels-b$b-$way.txt 2>&1
        echo "kernels b$b $way rc=$? $(grep -h 'lm_head_pick' $R/kernels-b$b-$way.txt | tr -s ' ' | cut -d' ' -f1,2,9 | tr '\n' ' ') $(grep -h 'sum of kernel times' $R/kernels-b$b-$way.txt | cut -c1-40)"
    done
done
pack
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
W="base:$C/dllm-base;new:$C/dllm"
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 && W="$W;g256:$C/dllm:--cuda-graph-max-bs 256"
bash tools/ab-ways.sh $R/lines 2 "$W" step $M --batch 64,128
pack
bash tools/ab-ways.sh $R/generate 1 "base:$C/dllm-base;new:$C/dllm" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
# 5. ncu (real clocks) of the expert tiles, where their in-step rate is lowest (batch 128: gate_up
#    78%, down 80% of the copy rate on session 63's H200): DRAM, L2 and tensor-pipe use, to tell
#    whether the padded rows' products or the L2 bind them.
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
NM="--clock-control none --section SpeedOfLight --metrics sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum,lts__t_bytes.sum"
for spec in 128:moe_gate_up_m192_ws 128:moe_down_m128_ws 64:moe_gate_up_m128_ws; do
    [ $SECONDS -gt 360 ] && break
    b=${spec%%:*}; k=${spec#*:}
    timeout 100 $NCU $NM -k regex:"^$k\$" --launch-skip 3 --launch-count 1 \
        $C/dllm bench kernels --preset mini --device cuda --prefix 1024 --batch $b > $R/ncu-b$b-$k.txt 2>&1
    echo "ncu b$b $k rc=$?"; grep -E "Duration|Throughput|pipe_tensor|bytes|ERROR" $R/ncu-b$b-$k.txt | head -12
done
pack
echo "total: ${SECONDS}s"
