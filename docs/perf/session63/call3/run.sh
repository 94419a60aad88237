#!/usr/bin/env bash
# Session 63's third call. .carry/dllm is this session's build: lm_head_pick_merge issues a lane's
# parts' loads LM_PICK_MERGE_ROUND at a time before combining them (it was a chain of dependent
# loads: ~10 us a call, 28% of the copy rate at batch 64 on call1's H200). .carry/dllm-base is
# 4f58858's (call1's). The test binaries are this build's.
# 1. lm_head_pick_forms_match_cpu (now also over a 70,000-word vocabulary: two rounds a lane),
#    graph replay and the fixtures; the benchmarks only if they pass.
# 2. `bench kernels` at batch 64, 1 and 128 (as time allows: ~250 s of device time were left), base /
#    new: the merge's row.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
SECONDS=0
gunzip -f $C/dllm.gz $C/dllm-base.gz
nvidia-smi --query-gpu=name --format=csv,noheader
bash tools/cuda-tests.sh $R/tests lm_head_pick_forms_match_cpu cuda_graph_replay_equals_eager
rc=$?
bash tools/unpack-tests.sh test_model_vs_fixtures
timeout 60 /tmp/test_model_vs_fixtures > $R/tests/fixtures.txt 2>&1; frc=$?; echo "rc=$frc" >> $R/tests/fixtures.txt
grep -h "test result" $R/tests/fixtures.txt
[ $rc -ne 0 ] || [ $frc -ne 0 ] && { echo "tests failed: no benchmarks"; grep -h -B2 -A12 "panicked" $R/tests/*.txt | head -60; exit 1; }
for b in 64 1 128; do
    [ $SECONDS -gt 100 ] && break
    for way in base new; do
        bin=$C/dllm; [ $way = base ] && bin=$C/dllm-base
        timeout 90 $bin bench kernels --preset mini --device cuda --prefix 1024 --batch $b > $R/kernels-b$b-$way.txt 2>&1
        echo "kernels b$b $way rc=$? $(grep -h 'lm_head_pick' $R/kernels-b$b-$way.txt | tr -s ' ' | cut -d' ' -f1,2,9 | tr '\n' ' ') $(grep -h 'sum of kernel times' $R/kernels-b$b-$way.txt | cut -c1-40)"
    done
done
echo "total: ${SECONDS}s"
