#!/usr/bin/env bash
# Runs ON the GPU machine, from the repo root, after `source tools/device-env.sh "$R"`: the CUDA
# test binary from .carry (as tools/gpu-test.sh leaves it, or gzipped by tools/carry-ab.sh), one
# thread, with the given arguments (test names to run, `--skip NAME`; none: the whole suite), its
# output in OUTPUT_FOLDER/cuda-tests.txt ending in its rc and a summary on stdout; exits with the
# tests' status, so a call script can stop before its benchmarks. tools/device-suite.sh runs the
# suite through it, then the fixtures:
#   bash tools/cuda-tests.sh "$R" attention_variants_match_cpu cuda_graph_replay_equals_eager || exit 1
set -uo pipefail
R=${1:?usage: tools/cuda-tests.sh OUTPUT_FOLDER [test ...] [--skip TEST ...]}
shift
mkdir -p "$R"
bash tools/unpack-tests.sh test_cuda_kernels
SECONDS=0
timeout 300 /tmp/test_cuda_kernels --test-threads=1 "$@" > "$R/cuda-tests.txt" 2>&1
rc=$?
echo "rc=$rc" >> "$R/cuda-tests.txt"
echo "tests rc=$rc (${SECONDS}s)"
grep -h "test result\|panicked\|FAILED" "$R/cuda-tests.txt" | head
exit $rc
