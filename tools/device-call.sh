# Sourced first by a session's device call (docs/perf/sessionN/callM/run.sh), from the repo root
# on the device machine: the preamble every call repeated. Sets R (the call's outputs, $OUT/r)
# and C (.carry), sources tools/device-env.sh into R (DEVICE_LIBS as there), unpacks every
# gzipped binary in .carry (tools/unpack-carry.sh), prints the GPU's name and clocks, and defines
# pack, which tars R into $OUT/r.tgz (a call's outputs past eight files come back only in it; call
# it after each part, so a call cut off by its time limit still returns what it measured) and
# tests_gate (below: the named CUDA tests and the fixtures, a failure ending the call). SECONDS
# restarts at 0.
R=$OUT/r
C=.carry
source tools/device-env.sh "$R"
pack() { (cd "$OUT" && tar czf r.tgz r); }
# Exported, so that a tools/ script the call runs (ncu-expert-tiles.sh) packs after each part too.
export -f pack
bash tools/unpack-carry.sh
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv,noheader
SECONDS=0

# tests_gate TEST...: the named CUDA tests (tools/cuda-tests.sh, into $R/tests) and the fixtures
# (tools/fixture-tests.sh). If either fails, it prints the panics, packs and ends the call: a
# build that fails its tests gets no benchmarks.
tests_gate() {
    bash tools/cuda-tests.sh "$R/tests" "$@"
    local rc=$?
    bash tools/fixture-tests.sh "$R/tests"
    local frc=$?
    if [ $rc -ne 0 ] || [ $frc -ne 0 ]; then
        echo "tests failed: no benchmarks"
        grep -h -B2 -A12 "panicked" "$R"/tests/*.txt | head -60
        pack
        exit 1
    fi
}
