#!/usr/bin/env bash
# Runs ON the GPU machine, from the repo root, after `source tools/device-env.sh "$R"`: the named
# CUDA tests from .carry's test binary (as tools/gpu-test.sh leaves it, or gzipped by
# tools/carry-ab.sh), one thread, their output in OUTPUT_FOLDER/cuda-tests.txt and a summary on
# stdout; exits with the tests' status, so a call script can stop before its benchmarks:
#   bash tools/cuda-tests.sh "$R" attention_variants_match_cpu cuda_graph_replay_equals_eager || exit 1
# (tools/device-suite.sh runs the whole suite and the fixtures instead.)
set -uo pipefail
R=${1:?usage: tools/cuda-tests.sh OUTPUT_FOLDER test [test ...]}
shift
mkdir -p "$R"
bash tools/unpack-tests.sh test_cuda_kernels
SECONDS=0
timeout 300 /tmp/test_cuda_kernels --test-threads=1 "$@" > "$R/cuda-tests.txt" 2>&1
rc=$?
echo "tests rc=$rc (${SECONDS}s)"
grep -h "test result\|panicked\|FAILED" "$R/cuda-tests.txt" | head
exit $rc
