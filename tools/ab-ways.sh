#!/usr/bin/env bash
# Runs ON the GPU machine, from the repo root, after `source tools/device-env.sh "$R"`: one `dllm
# bench` command (step, kernels or generate) under several named ways (a binary from .carry and
# its extra options), ROUNDS interleaved rounds (every way once a round, in the order given, so a
# machine's drift falls on all of them). Each run's output goes to OUT/PREFIX-WAY-ROUND.txt
# (PREFIX: w for step, as the session records name them, else the command; generate also writes
# its --json beside it), and a line a run goes to stdout: each batch's ms and ratio to the floor
# (step), the kernel-time sum (kernels), the tokens/s line (generate).
# WAYS is `;`-separated `name:binary[:options]`, e.g. a change on by default measured against the
# same binary with it off and against the code before it (tools/carry-ab.sh's two binaries):
#   W="base:.carry/dllm-base;off:.carry/dllm:--rope-in-attention false;on:.carry/dllm"
#   bash tools/ab-ways.sh "$R" 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64
#   bash tools/ab-ways.sh "$R" 1 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
set -uo pipefail
usage="usage: tools/ab-ways.sh OUTPUT_FOLDER ROUNDS WAYS step|kernels|generate bench-args..."
R=${1:?$usage}
ROUNDS=${2:?$usage}
WAYS=${3:?$usage}
CMD=${4:?$usage}
shift 4
case $CMD in
    step) prefix=w ;;
    kernels | generate) prefix=$CMD ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
mkdir -p "$R"
IFS=';' read -r -a ways <<<"$WAYS"
for i in $(seq 1 "$ROUNDS"); do
    for spec in "${ways[@]}"; do
        IFS=':' read -r name bin opts <<<"$spec"
        out="$R/$prefix-$name-$i.txt"
        extra=()
        [ "$CMD" = generate ] && extra=(--json "$R/$prefix-$name-$i.json")
        # shellcheck disable=SC2086 # the way's options are words
        timeout 120 "$bin" bench "$CMD" "$@" $opts "${extra[@]}" > "$out" 2>&1
        rc=$?
        case $CMD in
            step) summary=$(grep -E '^ +[0-9]+ (random|mask) ' "$out" | awk '{printf "b%s %s %sx  ", $1, $5, $11}') ;;
            kernels) summary=$(grep -h 'sum of kernel times' "$out") ;;
            generate) summary=$(grep -h 'tokens/s' "$out" | cut -c1-120) ;;
        esac
        echo "$prefix-$name-$i rc=$rc $summary$(grep -m1 -i error "$out" | cut -c1-200)"
    done
done
