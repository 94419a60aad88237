#!/usr/bin/env bash
# Runs ON the GPU machine, from the repo root: the fixture tests (test_model_vs_fixtures from
# .carry, as tools/gpu-test.sh leaves it or gzipped), the twin of tools/cuda-tests.sh for them.
# Output in OUTPUT_FOLDER/fixtures.txt ending in its rc, a summary on stdout; exits with the tests'
# status. tools/device-suite.sh and device-call.sh's tests_gate run it:
#   bash tools/fixture-tests.sh "$R" || exit 1
set -uo pipefail
R=${1:?usage: tools/fixture-tests.sh OUTPUT_FOLDER}
mkdir -p "$R"
bash tools/unpack-tests.sh test_model_vs_fixtures
timeout 60 /tmp/test_model_vs_fixtures > "$R/fixtures.txt" 2>&1
rc=$?
echo "rc=$rc" >> "$R/fixtures.txt"
grep -h "test result\|^rc=\|panicked\|FAILED" "$R/fixtures.txt" | head
exit $rc
