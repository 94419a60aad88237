#!/usr/bin/env bash
# Session 65 call1 (session 64 call2 carried forward; that script now points here): session 64 call1's ncu again, on launches of the timed steps. Call1's fourth
# launch of each kernel fell before them: gate_up m128 and down m128 in bench's router-balancing
# forwards (2,112 rows, as-drawn routing: ~170 experts), gate_up m192 in the batch-128 bench's
# prefix prefill (8,192-row forwards). Skipped here: the balancing's 3 forwards x 19 MoE layers
# (m128 at 66 picks an expert), then the prefix prefill's forwards of 8,192 rows (m192 gate_up,
# m128 down; 16 forwards at batch 128, 8 at 64). .carry/dllm-base: the build of 46b1e2c (tools/gpu-test.sh).
# Per launch: DRAM, L2 and tensor-pipe use, the L2's bytes by where they come from (the SMs, the
# other L2 partition's fabric, where ncu has the metric), to size what crosses the L2.
set -uo pipefail
source tools/device-call.sh
bash tools/ncu-expert-tiles.sh $R $C/dllm-base 420 150
pack
echo "total: ${SECONDS}s"
