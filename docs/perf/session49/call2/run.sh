#!/usr/bin/env bash
# Session 49's second call. `.carry` from `bash tools/gpu-test.sh` at the session's HEAD (the test
# binaries gzipped). ~4 minutes (~7 on an H200, which first runs call1's lines and batch-1 baseline):
# 1. the CUDA suite and the fixtures: cuda_graph_replay_equals_eager now also checks that a step
#    carrying a prompt is not recorded; every_item_size's mended list (8bd0e33) runs for the
#    first time;
# 2. bench generate at the default budget and unchunked: call1's unchunked run tried to record its
#    67,584-token step, whose upload ran out of memory, and every later shape then failed too;
# 3. bench prefill 4,096 x 8 in one forward of 32,768 (call1 timed 8,192 in call7's trace).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
if grep -q H200 $R/device.txt; then
  # On an H200, first the lines and the batch-1 speedup (call1's first half; session 48's call8).
  M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
  timeout 75 $C/dllm bench step $M --batch 1,4,16,64,128 --json $R/step-mini.json > $R/step-mini.txt 2>&1
  grep "^ *[0-9]\|rror\|device:" $R/step-mini.txt | cut -c1-160
  timeout 90 python3 tools/baseline_torch.py --preset mini --batch 1 --prefix 1024 --block 32 \
      --warmup 10 --iters 50 --variants triton --mask-frac 0 \
      --json "$R/baseline-b1.json" > "$R/baseline-b1.log" 2>&1
  echo "baseline rc=$? ${SECONDS}s"; grep "balanced\|prefilled\|triton:" "$R/baseline-b1.log" | cut -c1-200
  timeout 40 $C/dllm bench step $M --batch 1 --baseline "$R/baseline-b1.json" > "$R/step-b1-vs.txt" 2>&1
  grep "^ *[0-9]\|rror" $R/step-b1-vs.txt | cut -c1-160
  pack
fi
bash tools/device-suite.sh "$R"
echo "suite: ${SECONDS}s"
pack
for cs in 8192 -1; do
  timeout 60 $C/dllm bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 --chunked-prefill-size $cs \
      --json $R/generate-cs$cs.json > $R/generate-cs$cs.txt 2>&1
  echo "generate chunk $cs rc=$?"; grep -h "tokens/s\|rror\|warning" $R/generate-cs$cs.txt | cut -c1-200
done
pack
for cs in 8192 32768; do
  timeout 60 $C/dllm bench prefill --preset mini --device cuda --prompt-len 4096 --batch 8 --chunked-prefill-size $cs \
      --json $R/prefill-4096x8-cs$cs.json > $R/prefill-4096x8-cs$cs.txt 2>&1
  echo "prefill 4096x8 chunk $cs rc=$?"; grep -E "^ +[0-9]|rror" $R/prefill-4096x8-cs$cs.txt | cut -c1-160
done
echo "total: ${SECONDS}s"
pack
