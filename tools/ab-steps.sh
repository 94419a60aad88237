#!/usr/bin/env bash
# Runs ON the GPU machine, from the repo root, after `source tools/device-env.sh "$R"`, with .carry
# from tools/carry-ab.sh: `.carry/dllm-base` against `.carry/dllm`, ROUNDS interleaved rounds of
# `bench step ARGS...` each (the base first in a round), every run's output in OUT/w-base-N.txt
# and OUT/w-new-N.txt: tools/ab-ways.sh with those two ways (it takes more, each with options).
#   bash tools/ab-steps.sh "$R" 2 --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,4,16,64,128
set -uo pipefail
R=${1:?usage: tools/ab-steps.sh OUTPUT_FOLDER ROUNDS bench-step-args...}
ROUNDS=${2:?usage: tools/ab-steps.sh OUTPUT_FOLDER ROUNDS bench-step-args...}
shift 2
exec bash "$(dirname "$0")/ab-ways.sh" "$R" "$ROUNDS" "base:.carry/dllm-base;new:.carry/dllm" step "$@"
