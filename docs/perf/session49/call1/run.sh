#!/usr/bin/env bash
# Session 49's first call. `.carry` from `bash tools/gpu-test.sh && bash tools/kernel-trace/build.sh`
# at the session's HEAD. ~6 minutes:
# 1. the lines on the default (bench step, batch 1-128);
# 2. on an H200 only: the baseline at batch 1 with its prompt-cache prefix, and ours against it
#    (session 48's call8; the H100 has shown it in sessions 47-48);
# 3. the prefill's token budget a forward (`--chunked-prefill-size`, SGLang's 8192 on H100/H200
#    by default): bench generate's own prefill (64 prompts of 1,024) at 8,192 / 16,384 / 32,768 /
#    unchunked, then bench generate itself at 8,192 / 32,768 / unchunked. A forward of 8,192
#    tokens gives each expert ~256 rows, about the GEMM's ridge, and re-reads every expert's
#    weights once a forward;
# 4. session 48's call7: a prefill's kernel timeline (4,096 x 8).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
timeout 75 $C/dllm bench step $M --batch 1,4,16,64,128 --json $R/step-mini.json > $R/step-mini.txt 2>&1
grep "^ *[0-9]\|rror\|device:" $R/step-mini.txt | cut -c1-160
echo "steps: ${SECONDS}s"
pack
if grep -q H200 $R/device.txt; then
  timeout 90 python3 tools/baseline_torch.py --preset mini --batch 1 --prefix 1024 --block 32 \
      --warmup 10 --iters 50 --variants triton --mask-frac 0 \
      --json "$R/baseline-b1.json" > "$R/baseline-b1.log" 2>&1
  echo "baseline rc=$? ${SECONDS}s"; grep "balanced\|prefilled\|triton:" "$R/baseline-b1.log" | cut -c1-200
  timeout 40 $C/dllm bench step $M --batch 1 --baseline "$R/baseline-b1.json" > "$R/step-b1-vs.txt" 2>&1
  grep "^ *[0-9]\|rror" $R/step-b1-vs.txt | cut -c1-160
  pack
fi
for cs in 8192 16384 32768 -1; do
  timeout 60 $C/dllm bench prefill --preset mini --device cuda --prompt-len 1024 --batch 64 --chunked-prefill-size $cs \
      --json $R/prefill-1024x64-cs$cs.json > $R/prefill-1024x64-cs$cs.txt 2>&1
  echo "prefill 1024x64 chunk $cs rc=$? ${SECONDS}s"; grep -E "^ +[0-9]|rror" $R/prefill-1024x64-cs$cs.txt | cut -c1-160
done
pack
for cs in 8192 32768 -1; do
  timeout 60 $C/dllm bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 --chunked-prefill-size $cs \
      --json $R/generate-cs$cs.json > $R/generate-cs$cs.txt 2>&1
  echo "generate chunk $cs rc=$?"; grep -h "tokens/s\|rror" $R/generate-cs$cs.txt | cut -c1-200
done
echo "total: ${SECONDS}s"
pack
bash docs/perf/session48/call7/run.sh
echo "all: ${SECONDS}s"
