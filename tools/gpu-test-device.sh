#!/usr/bin/env bash
# Runs ON the GPU machine (no cargo, no network), from the repo root, with .carry/ built by
# tools/gpu-test.sh (or tools/carry-ab.sh): per-kernel tests, fixture tests on cuda,
# compute-sanitizer over one tiny generation, the tiny model and the mini shape (random device
# weights, prefix 1024, batch 1) through `dllm generate --device cuda`. Logs go to $OUT; a
# pass/fail table is printed last.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-test-out}
mkdir -p "$OUT"
C=.carry
bash tools/unpack-carry.sh  # tools/carry-ab.sh's binaries come gzipped
declare -a NAMES RESULTS
row() { NAMES+=("$1"); RESULTS+=("$2"); }
run() {  # name, log file, command...
    local name=$1 log=$2; shift 2
    echo "=== $name: $*" | tee -a "$OUT/$log"
    local t0=$(date +%s)
    if "$@" >>"$OUT/$log" 2>&1; then row "$name" "PASS ($(( $(date +%s) - t0 ))s)"; else row "$name" "FAIL rc=$? (see $log)"; fi
    tail -n 12 "$OUT/$log"
}
# cuBLAS is loaded at run time (cudarc dynamic loading).
source tools/device-env.sh "$OUT"

run "cuda_kernels tests" tests.log timeout 300 $C/test_cuda_kernels --test-threads=1 --nocapture
run "tiny generate cuda" tiny.log sh -c "$C/dllm generate --device cuda --json --max-new-tokens 64 > $OUT/tiny_cuda.json"
run "tiny generate cpu" tiny.log sh -c "$C/dllm generate --device cpu --json --max-new-tokens 64 > $OUT/tiny_cpu.json"
cat "$OUT/tiny_cuda.json" "$OUT/tiny_cpu.json"
# Informational: tiny's top-k routing flips near-tied experts under bf16, so whole generations
# may diverge (tests/cuda_kernels.rs explains; dense_routing_lockstep_matches_cpu is the strict check).
run "tiny cuda vs cpu tokens (info)" tiny.log python3 -c "import json; a=json.load(open('$OUT/tiny_cuda.json'))['output_ids']; b=json.load(open('$OUT/tiny_cpu.json'))['output_ids']; print('equal' if a==b else 'differ: %d/%d tokens equal, first difference at %d' % (sum(x==y for x,y in zip(a,b)), len(b), next(i for i,(x,y) in enumerate(zip(a,b)) if x!=y)))"
run "server features on cuda (logprobs fused = host path, bias, penalties, n, stop_regex, chat template)" server.log timeout 300 python3 tools/gpu_server_smoke.py $C/dllm
run "mini random weights, prefix 1024" mini.log timeout 200 $C/dllm generate --device cuda --random-weights mini --prefix-len 1024 --block-size 32 --max-new-tokens 64
run "mini per-kernel profile (CUDA events; step times include the profiling hold)" mini_profile.log timeout 200 $C/dllm generate --device cuda --profile-kernels --random-weights mini --prefix-len 1024 --block-size 32 --max-new-tokens 64

if command -v compute-sanitizer >/dev/null; then
    run "memcheck tiny generation" memcheck.log timeout ${MEMCHECK_TIMEOUT:-200} compute-sanitizer --tool memcheck --error-exitcode 3 $C/dllm generate --device cuda --mem-fraction-static 0.02 --max-new-tokens 32
else
    row "memcheck tiny generation" "SKIP (no compute-sanitizer)"
fi

echo
echo "| check | result |"
echo "| --- | --- |"
for i in "${!NAMES[@]}"; do echo "| ${NAMES[$i]} | ${RESULTS[$i]} |"; done | tee "$OUT/table.md"
grep -h "ms/step" "$OUT/mini.log" || true
grep -h "ms/step" "$OUT/mini_profile.log" | head -30 || true
