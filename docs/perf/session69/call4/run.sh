#!/usr/bin/env bash
# Session 69 call4, any card (on an H200 the greedy rows are the lines too): d12ce36, the
# sampler's clusters of 2 CTAs a row. .carry: `bash tools/carry-ab.sh 9c77d81` at d12ce36 or a
# later commit whose src/ and csrc/ differ from it in comments only (dllm, and 9c77d81's as
# dllm-base: clusters of 4). Not run in session 69 (no machine could be started).
#  1. The whole CUDA suite and the fixtures; memcheck of the sampler's CPU-twin test.
#  2. Steps at batch 16, 64 and 128 (call3 had batch 1 level), one round (a second if time is
#     left): greedy, sampled (temperature 0.7, top-p 0.9), and sampled on the base.
set -uo pipefail
source tools/device-call.sh
tests_gate
bash tools/memcheck-tests.sh $R sample_kernel_matches_sample_row_u
pack
echo "tests: ${SECONDS}s"
S="--temperature 0.7 --top-p 0.9"
W="greedy:$C/dllm;sampled:$C/dllm:$S;sampled-base:$C/dllm-base:$S"
# The device time left this session (~400 s) allows one round, a second only if the tests were quick.
timeout $((220 - SECONDS)) bash tools/ab-ways.sh $R/ab 1 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 16,64,128
pack
[ $SECONDS -lt 150 ] && timeout $((250 - SECONDS)) bash tools/ab-ways.sh $R/ab2 1 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 16,64,128
pack
echo "total: ${SECONDS}s"
