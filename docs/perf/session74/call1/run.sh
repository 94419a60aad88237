#!/usr/bin/env bash
# Session 74 call1: session 73 call1 cut to ~7 minutes of device time, for a session whose device
# budget was mostly spent on machines that did not start. It reads only tools/ and .carry:
# `bash tools/carry-ab.sh main` on branch s73-live-rows (rebased onto 7051d62): dllm and the test
# binaries the branch, dllm-base main at 7051d62. Any card.
#  1. The CUDA suite and the fixtures (tests_gate: a failure ends the call), then memcheck of the
#     two new tests (lm_head_pick with a live count; a block's steps on one graph).
#  2. `bench generate --requests 64 --tokens-per-step 2`, routers as drawn (the issue's routing,
#     the like-for-like line), base and this build, two interleaved rounds.
#  3. Greedy steps at batch 64 and 128, base and this build, two interleaved rounds.
# Its one argument: the seconds it may take (420 by default); under 400 it skips part 2, and
# under 300 part 1 runs only the suite's tests named pick, graph or forward (the change's reach).
set -uo pipefail
LIMIT=${1:-420}
source tools/device-call.sh
if [ "$LIMIT" -ge 300 ]; then tests_gate; else tests_gate pick graph forward; fi
bash tools/memcheck-tests.sh "$R/tests" lm_head_pick_forms_match_cpu cuda_graphs_serve_a_blocks_steps_whatever_rows_they_predict
pack
echo "tests: ${SECONDS}s"
if [ "$LIMIT" -ge 400 ]; then
W="base-drawn:$C/dllm-base:--balanced-router false;now-drawn:$C/dllm:--balanced-router false"
timeout $((330 - SECONDS)) bash tools/ab-ways.sh $R/generate 2 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
echo "generate: ${SECONDS}s"
fi
timeout $((LIMIT - SECONDS)) bash tools/ab-ways.sh $R/ab 2 "base:$C/dllm-base;now:$C/dllm" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 64,128
pack
echo "total: ${SECONDS}s"
