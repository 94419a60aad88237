#!/usr/bin/env bash
# Runs ON the GPU machine, from the repo root, after `source tools/device-env.sh "$R"`, with .carry
# from tools/carry-ab.sh: `.carry/dllm-base` against `.carry/dllm`, ROUNDS interleaved rounds of
# `bench step ARGS...` each (the base first in a round, so a machine's drift falls on both), every
# run's output in OUT/w-base-N.txt and OUT/w-new-N.txt, and a line a run with its step_ms a batch.
# The docs/perf/*/run.sh calls that measure a change against the code before it use it:
#   bash tools/ab-steps.sh "$R" 2 --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,4,16,64,128
set -uo pipefail
R=${1:?usage: tools/ab-steps.sh OUTPUT_FOLDER ROUNDS bench-step-args...}
ROUNDS=${2:?usage: tools/ab-steps.sh OUTPUT_FOLDER ROUNDS bench-step-args...}
shift 2
mkdir -p "$R"
for i in $(seq 1 "$ROUNDS"); do
    for way in base new; do
        bin=.carry/dllm
        [ "$way" = base ] && bin=.carry/dllm-base
        out="$R/w-$way-$i.txt"
        timeout 120 "$bin" bench step "$@" > "$out" 2>&1
        echo "w-$way-$i $(grep -E '^ +[0-9]+ (random|mask) ' "$out" | awk '{printf "%s ", $5}')$(grep -m1 -i error "$out")"
    done
done
