#!/usr/bin/env bash
# Session 51's second call (one H200; `.carry` as call1's): bench generate (64 requests, 2 tokens
# a step) and a 4,096 x 8 prefill for 6b8eafb as it is, with the attention's ping-pong, and with
# the rope patch; `bench kernels` at batch 128 and 64 (gate_up's 192-row units against 6bebda1's
# 128-row items, the rope store's rows-first form, the attention's rows with the ping-pong); then,
# with time left, session 49's knob sweep on the H200 (its call4 got an H100) with 6b8eafb's
# binary. ~10 min; each part guarded by the time left.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=/tmp/bins
mkdir -p $C; for f in dllm dllm-base dllm-rope; do gunzip -c .carry/$f.gz > $C/$f && chmod +x $C/$f; done
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bin() { case $1 in base) echo $C/dllm-base ;; rope) echo $C/dllm-rope ;; *) echo $C/dllm ;; esac; }
flags() { [ $1 = pingpong ] && echo "--att-pingpong true"; }
SECONDS=0
for way in new pingpong rope; do
  timeout 60 $(bin $way) bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 $(flags $way) \
      --json $R/generate-$way.json > $R/generate-$way.txt 2>&1
  echo "generate $way rc=$? ${SECONDS}s"; grep -h "tokens/s\|rror\|warning" $R/generate-$way.txt | cut -c1-200
done
pack
for way in new pingpong; do
  timeout 90 $(bin $way) bench prefill --preset mini --device cuda --prompt-len 4096 --batch 8 $(flags $way) \
      --json $R/prefill-$way.json > $R/prefill-$way.txt 2>&1
  echo "prefill $way rc=$? ${SECONDS}s"; grep -E "^ +[0-9]|rror" $R/prefill-$way.txt | cut -c1-160
done
pack
for run in base:128 new:128 rope:128 pingpong:128 new:64 rope:64 pingpong:64 base:64; do
  [ $SECONDS -lt 480 ] || break
  way=${run%:*}; n=${run#*:}
  timeout 90 $(bin $way) bench kernels --preset mini --device cuda --prefix 1024 --batch $n $(flags $way) > $R/kernels-b$n-$way.txt 2>&1
  echo "kernels b$n $way rc=$? ${SECONDS}s"; grep -i "moe_gate_up\|moe_down\|qk_norm_rope\|block_attention\|sum of\|rror" $R/kernels-b$n-$way.txt | cut -c1-170
  pack
done
if grep -q H200 $R/device.txt && [ $SECONDS -lt 330 ]; then
  mkdir -p .carry-knobs && ln -sf $C/dllm .carry-knobs/dllm
  sed 's#C=\.carry#C=.carry-knobs#' docs/perf/session49/call4/run.sh > /tmp/knobs.sh
  OUT=$OUT/knobs bash /tmp/knobs.sh
fi
echo "total: ${SECONDS}s"
pack
