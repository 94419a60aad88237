#!/usr/bin/env bash
# Session 49's second call. `.carry` from `bash tools/gpu-test.sh` at the session's HEAD (the test
# binaries gzipped). ~4 minutes:
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
