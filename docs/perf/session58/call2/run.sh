#!/usr/bin/env bash
# Session 58's second call: how long the device sits idle between step forwards. `.carry/dllm`
# is HEAD with `bench step`'s new idle line (timing events around each step's forward on the
# stream; its wall time less that span); `.carry/dllm-base` is bbfd34f (the same src/ and csrc/
# as HEAD), from call1's tools/carry-ab.sh. Steps at batch 1, 16, 64 and 128, the two ways
# interleaved, two rounds (the events must cost nothing measurable).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
W="base:$C/dllm-base;new:$C/dllm"
bash tools/ab-ways.sh $R 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
grep -h "device idle\|host time" $R/w-new-*.txt
pack
echo "total: ${SECONDS}s"
