#!/usr/bin/env bash
# Profile a short run of denoising steps. Ranges (domain "dllm": step, forward, layer N,
# attention, moe, mlp, lm_head) come from src/nvtx.rs.
#   tools/profile.sh [nsys|ncu] [extra dllm bench step args]
# nsys: a timeline (.nsys-rep). ncu: per-kernel counters for the kernels inside one "step"
# range (the device machines here have ncu but no working nsys). Reports go to $OUT or
# ./profile-out, and the script prints where.
set -euo pipefail
TOOL=${1:-nsys}; shift || true
OUT=${OUT:-$PWD/profile-out}
mkdir -p "$OUT"
BIN=${DLLM_BIN:-.carry/dllm}
[ -x "$BIN" ] || BIN=target/release/dllm
ARGS=(bench step --preset "${PRESET:-mini}" --device cuda --batch "${BATCH:-1}" --prefix "${PREFIX:-1024}" --steps 3 "$@")
case "$TOOL" in
nsys)
    command -v nsys >/dev/null || { echo "nsys is not on PATH; try: tools/profile.sh ncu" >&2; exit 2; }
    nsys profile --trace=cuda,nvtx --force-overwrite true -o "$OUT/dllm-step" "$BIN" "${ARGS[@]}"
    echo "report: $OUT/dllm-step.nsys-rep (open in Nsight Systems; NVTX rows under domain dllm)"
    ;;
ncu)
    command -v ncu >/dev/null || { echo "ncu is not on PATH" >&2; exit 2; }
    # Only kernels launched inside a "step" range of the dllm domain, one step's worth. By default
    # only time and DRAM bytes per kernel: one pass, so no kernel replay (replaying a kernel of the
    # mini shape saves and restores ~40 GB of device memory per pass: minutes per kernel).
    # NCU_SET=basic|detailed|full collects a section set instead, replaying the whole
    # application once per pass.
    if [ -n "${NCU_SET:-}" ]; then
        COLLECT=(--set "$NCU_SET" --replay-mode application)
    else
        COLLECT=(--metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum)
    fi
    ncu --nvtx --nvtx-include "dllm@step/" --launch-count "${LAUNCHES:-400}" "${COLLECT[@]}" \
        --force-overwrite -o "$OUT/dllm-step" "$BIN" "${ARGS[@]}"
    ncu --import "$OUT/dllm-step.ncu-rep" --page raw --csv \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum >"$OUT/dllm-step-kernels.csv" || true
    echo "report: $OUT/dllm-step.ncu-rep (ncu-ui), per-kernel CSV: $OUT/dllm-step-kernels.csv"
    ;;
*) echo "usage: tools/profile.sh [nsys|ncu] [dllm bench step args]" >&2; exit 2 ;;
esac
