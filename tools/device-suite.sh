#!/usr/bin/env bash
# Runs ON the GPU machine, from the repo root, after `source tools/device-env.sh "$R"`: the CUDA
# suite and the fixture tests from .carry (the test binaries as tools/gpu-test.sh leaves them, or
# gzipped to fit the carry limit), then compute-sanitizer's memcheck of each test named in the
# arguments after the output folder. Outputs in that folder (cuda-tests.txt, fixtures.txt,
# memcheck-NAME.txt, each ending in its rc), a summary on stdout. The docs/perf/*/run.sh calls
# start with it:  bash tools/device-suite.sh "$R" [--skip TEST ...] [test ...]
# (--skip: a CUDA test left out of the suite, e.g. one that hung when run alone first.)
set -uo pipefail
R=${1:?usage: tools/device-suite.sh OUTPUT_FOLDER [--skip TEST ...] [test to memcheck ...]}
shift
skip=(); memcheck=()
while [ $# -gt 0 ]; do
    if [ "$1" = --skip ]; then skip+=(--skip "${2:?--skip needs a test name}"); shift 2; else memcheck+=("$1"); shift; fi
done
mkdir -p "$R"
bash tools/cuda-tests.sh "$R" "${skip[@]}"
bash tools/fixture-tests.sh "$R"
if [ ${#memcheck[@]} -gt 0 ]; then bash tools/memcheck-tests.sh "$R" "${memcheck[@]}"; fi
