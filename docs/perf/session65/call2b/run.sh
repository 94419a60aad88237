#!/usr/bin/env bash
# Session 65's call2 cut to the device time left (~200 s): the two tests, then steps at batch 64
# and 128, one round: base / window 32 MiB + discards / window alone (see ../call2/run.sh).
set -uo pipefail
source tools/device-call.sh
bash tools/cuda-tests.sh $R/tests moe_norm_both_ways_matches_cpu cuda_graph_replay_equals_eager
rc=$?
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; grep -h -B2 -A12 "panicked" $R/tests/*.txt | head -60; pack; exit 1; }
echo "tests: ${SECONDS}s"
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
W="base:$C/dllm-base;s32d:$C/dllm:--l2-slot-mb 32 --discard-slots true;s32:$C/dllm:--l2-slot-mb 32"
bash tools/ab-ways.sh $R/lines 1 "$W" step $M --batch 64,128
pack
echo "total: ${SECONDS}s"
