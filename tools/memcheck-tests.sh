#!/usr/bin/env bash
# Runs ON the GPU machine, from the repo root: compute-sanitizer's memcheck of each CUDA test named
# after the output folder, on /tmp/test_cuda_kernels (tools/unpack-tests.sh puts it there). Each
# test's output in memcheck-NAME.txt, ending in its rc; a line each on stdout. Used by
# tools/device-suite.sh and by call scripts that memcheck without the whole suite:
#   bash tools/memcheck-tests.sh OUTPUT_FOLDER test [test ...]
set -uo pipefail
R=${1:?usage: tools/memcheck-tests.sh OUTPUT_FOLDER test [test ...]}
shift
mkdir -p "$R"
for t in "$@"; do
    timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 "$t" > "$R/memcheck-$t.txt" 2>&1
    echo "rc=$?" >> "$R/memcheck-$t.txt"
    echo "memcheck $t: $(grep -h "ERROR SUMMARY" "$R/memcheck-$t.txt") $(tail -1 "$R/memcheck-$t.txt")"
done
