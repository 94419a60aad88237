#!/usr/bin/env bash
# Runs ON the GPU machine (no cargo, no network), from the repo root, with .carry/ built by
# tools/gpu-test.sh. One call gives the issue-5/13 numbers: the PyTorch baseline and our step,
# same shapes, same card, same call, with the random routers balanced as training balances them
# (both tools' default) and the block's masked positions carrying random ids (realistic routing:
# `--tokens random`, baseline `--mask-frac 0`) and, as a second row, masks;
# the prefill; then the plot. Results land in $OUT (fetch them into docs/perf/).
# Usage: run(command="bash tools/bench-device.sh", carry=[".carry"]).
# Knobs: PRESET, BATCHES, PREFIX; BASELINE_MASK_FRACS (below); PROMPT_LENS / PREFILL_BATCHES
# for the prefill (PREFILL=0 skips it).
set -uo pipefail
# Everything is written to a work folder, then packed into $OUT/bench-results.tar.gz (the device
# tool brings back a few files per call), with the plot beside it.
FINAL_OUT=${OUT:-/tmp/bench-out}
OUT=$(mktemp -d)
mkdir -p "$FINAL_OUT"
PRESET=${PRESET:-mini}
BATCHES=${BATCHES:-1,4,16,64}
PREFIX=${PREFIX:-1024}
PROMPT_LENS=${PROMPT_LENS:-4096,32736}
PREFILL_BATCHES=${PREFILL_BATCHES:-1,8}
source tools/device-env.sh "$OUT"

# 1. The baseline (torch.compile + CUDA graph, with torch._grouped_mm or the Triton fused MoE,
# tile configs tuned per batch at startup; eager as the fallback variant). One run per mask
# fraction in BASELINE_MASK_FRACS (default 0: random ids on balanced routers, the realistic routing that
# `bench step --tokens random` compares with; 0.5 is what the mask rows compare with):
# 0.5 -> baseline-$PRESET.json, any other F -> baseline-$PRESET-mfF.json; all are attached
# below. The first run pays the Triton compiles (~1-2 min), later ones hit Triton's cache.
for MF in ${BASELINE_MASK_FRACS:-0}; do
    NAME=baseline-$PRESET; [ "$MF" != "0.5" ] && NAME=baseline-$PRESET-mf$MF
    timeout 420 python3 tools/baseline_torch.py --preset "$PRESET" --batch "$BATCHES" --prefix "$PREFIX" --block 32 \
        --warmup 10 --iters 50 --variants compile,triton,eager --mask-frac "$MF" --json "$OUT/$NAME.json" >"$OUT/$NAME.log" 2>&1
    echo "baseline (mask-frac $MF) rc=$?"; tail -n 6 "$OUT/$NAME.log"
done
BASELINES=$(ls "$OUT"/baseline-"$PRESET".json "$OUT"/baseline-"$PRESET"-mf*.json 2>/dev/null | paste -sd, -)

# 2. Ours, random block tokens (the headline) and masks (the figure before issue 13), with the
#    baselines attached: each row takes the baseline run of its tokens, and a speedup is quoted
#    only where the two routed to within 5% as many experts a layer.
timeout 240 .carry/dllm bench step --preset "$PRESET" --device cuda --batch "$BATCHES" --prefix "$PREFIX" --block 32 \
    --steps 16 --tokens random,mask ${BASELINES:+--baseline "$BASELINES"} --json "$OUT/step-$PRESET.json" 2>&1 | tee "$OUT/step.log"

# 3. Every kernel of a batch-1, -16 and -64 step against its ceiling (random block tokens).
for b in 1 16 64; do
    timeout 120 .carry/dllm bench kernels --preset "$PRESET" --device cuda --batch $b --prefix "$PREFIX" \
        --json "$OUT/kernels-$PRESET-b$b.json" 2>&1 | tee "$OUT/kernels-b$b.log"
done

# 4. Prefill: the first step of fresh requests (chunked prefill + first block) against its floor.
if [ "${PREFILL:-1}" = 1 ]; then
    timeout 300 .carry/dllm bench prefill --preset "$PRESET" --device cuda --prompt-len "$PROMPT_LENS" \
        --batch "$PREFILL_BATCHES" --json "$OUT/prefill-$PRESET.json" 2>&1 | tee "$OUT/prefill.log"
fi

# 5. End to end, and the plot (the random-token rows).
timeout 120 .carry/dllm bench generate --preset "$PRESET" --device cuda --requests 1 --prefix "$PREFIX" \
    --tokens-per-step 2 --max-new-tokens 256 --json "$OUT/generate-$PRESET.json" 2>&1 | tee "$OUT/generate.log"
python3 tools/plot_step.py --json "$OUT/step-$PRESET.json" --out "$OUT/step-$PRESET.png" 2>&1 | tail -n 2
cp "$OUT/step-$PRESET.png" "$FINAL_OUT/" 2>/dev/null
tar czf "$FINAL_OUT/bench-results.tar.gz" -C "$OUT" .
echo "results: $FINAL_OUT/bench-results.tar.gz"
