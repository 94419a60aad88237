#!/usr/bin/env bash
# Session 65's second call: a MoE layer's expert outputs (the slot rows down writes and the next
# add_moe_rms_norm reads: 67 MB a layer at batch 64, 134 at 128) kept in the L2 between the two.
# Today they cross DRAM both ways, the 1.1-1.6 GB of weights streamed between pushing them out.
# --l2-slot-mb N sets aside N MiB of the L2 for persisting lines and gives down's and the norm's
# launches an access-policy window over the slot rows (hit ratio N MiB / their bytes);
# --discard-slots true has the norm drop each slot row's lines once read (discard.global.L2: no
# write-back of dead rows, and the set-aside free again for the next layer's down).
# .carry/dllm: 46b1e2c + ../l2-slot-residency.patch (both options off by default; reverted from main by 14a8420 until run); .carry/dllm-base: the build of 46b1e2c.
# 1. Tests: moe_norm_both_ways_matches_cpu (with the window and discards), graph replay (a way with
#    both), fixtures; the benchmarks only if they pass.
# 2. Steps at batch 16, 64 and 128, one round and a second where time allows: base / window 32 MiB + discards /
#    window 32 MiB alone.
# 3. `bench kernels` at batch 64, the same ways (tools/ab-ways.sh): gate_up's, down's and the
#    norm's rows (if the call has the time).
set -uo pipefail
source tools/device-call.sh
tests_gate moe_norm_both_ways_matches_cpu cuda_graph_replay_equals_eager
echo "tests: ${SECONDS}s"
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
W="base:$C/dllm-base;s32d:$C/dllm:--l2-slot-mb 32 --discard-slots true;s32:$C/dllm:--l2-slot-mb 32"
# Round 2 in its own folder, only if the call has the time (device time ran short this session).
bash tools/ab-ways.sh $R/lines 1 "$W" step $M --batch 16,64,128
pack
[ $SECONDS -lt 200 ] && { bash tools/ab-ways.sh $R/lines2 1 "$W" step $M --batch 16,64,128; pack; }
echo "steps: ${SECONDS}s"
if [ $SECONDS -le 280 ]; then
    bash tools/ab-ways.sh $R/kernels 1 "$W" kernels --preset mini --device cuda --prefix 1024 --batch 64
    grep -E '^(moe_gate_up_m128_ws|moe_down_m128_ws|add_moe_rms_norm) ' $R/kernels/*.txt
fi
pack
echo "total: ${SECONDS}s"
