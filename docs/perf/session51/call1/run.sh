#!/usr/bin/env bash
# Session 51's first call (one H200 asked for): three builds side by side.
#   dllm-base: 6bebda1 (session 49's code), dllm: 6af0218 (session 50's, gate_up's 192-row units
#   in their final form, never run on an H200), dllm-rope: 6af0218 with
#   docs/perf/session50/rope-rows-first.patch (qk_norm_rope_store's head rows before the position).
# The test binaries are the rope build's (its kernel is the one changed). Built here by
# `bash tools/carry-ab.sh 6bebda1`, then the patch applied, `cargo build --release` and
# `cargo test --release --no-run` copied in as dllm-rope and the gzipped test binaries.
# Steps print host_ms (a7a61bd: the step's wall less the host's wait on the device).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=/tmp/bins
# The three binaries come gzipped (with the tracked tree, the carry limit is 64 MiB).
mkdir -p $C; for f in dllm dllm-base dllm-rope; do gunzip -c .carry/$f.gz > $C/$f && chmod +x $C/$f; done
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/device-suite.sh "$R"
echo "suite: ${SECONDS}s"
pack
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
for i in 1 2; do
  for way in base new rope; do
    b=$C/dllm; [ $way = base ] && b=$C/dllm-base; [ $way = rope ] && b=$C/dllm-rope
    timeout 120 $b bench step $M --batch 1,16,64,128 --json $R/step-$way-$i.json > $R/step-$way-$i.txt 2>&1
    echo "step $way $i rc=$? $(grep -E '^ +[0-9]+ (random|mask) ' $R/step-$way-$i.txt | awk '{printf "b%s %s  ", $1, $5}')"
    grep -h "host time\|rror" $R/step-$way-$i.txt | cut -c1-260
  done
done
echo "steps: ${SECONDS}s"
pack
for way in base new rope; do
  b=$C/dllm; [ $way = base ] && b=$C/dllm-base; [ $way = rope ] && b=$C/dllm-rope
  timeout 60 $b bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 \
      --json $R/generate-$way.json > $R/generate-$way.txt 2>&1
  echo "generate $way rc=$?"; grep -h "tokens/s\|rror\|warning" $R/generate-$way.txt | cut -c1-200
done
echo "generate: ${SECONDS}s"
pack
for run in base:128 new:128 rope:128 new:64 rope:64; do
  [ $SECONDS -lt 530 ] || break
  way=${run%:*}; n=${run#*:}
  b=$C/dllm; [ $way = base ] && b=$C/dllm-base; [ $way = rope ] && b=$C/dllm-rope
  timeout 120 $b bench kernels --preset mini --device cuda --prefix 1024 --batch $n > $R/kernels-b$n-$way.txt 2>&1
  echo "kernels b$n $way rc=$?"; grep -i "moe_gate_up\|moe_down\|qk_norm_rope\|sum of\|rror" $R/kernels-b$n-$way.txt | cut -c1-170
done
echo "kernels: ${SECONDS}s"
pack
echo "total: ${SECONDS}s"
pack
