#!/usr/bin/env bash
# Session 51's second call (one H200; `.carry` as call1's): `bench kernels` at batch 64 and 128
# for the three builds (gate_up's 192-row units in their final form against 6bebda1's 128-row
# items; the rope store's rows-first form against 6af0218's), then, with time left, session 49's
# knob sweep on the H200 (its call4 got an H100) with 6af0218's binary. ~9 min.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=/tmp/bins
mkdir -p $C; for f in dllm dllm-base dllm-rope; do gunzip -c .carry/$f.gz > $C/$f && chmod +x $C/$f; done
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
for run in base:128 new:128 rope:128 base:64 new:64 rope:64; do
  way=${run%:*}; n=${run#*:}
  b=$C/dllm; [ $way = base ] && b=$C/dllm-base; [ $way = rope ] && b=$C/dllm-rope
  timeout 120 $b bench kernels --preset mini --device cuda --prefix 1024 --batch $n > $R/kernels-b$n-$way.txt 2>&1
  echo "kernels b$n $way rc=$? ${SECONDS}s"; grep -i "moe_gate_up\|moe_down\|qk_norm_rope\|sum of\|rror" $R/kernels-b$n-$way.txt | cut -c1-170
  pack
done
if grep -q H200 $R/device.txt && [ $SECONDS -lt 300 ]; then
  mkdir -p .carry-knobs && ln -sf $C/dllm .carry-knobs/dllm
  sed 's#C=\.carry#C=.carry-knobs#' docs/perf/session49/call4/run.sh > /tmp/knobs.sh
  OUT=$OUT/knobs bash /tmp/knobs.sh
fi
echo "total: ${SECONDS}s"
pack
