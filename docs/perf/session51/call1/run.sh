#!/usr/bin/env bash
# Session 51's first call (one H200 asked for): three builds side by side.
#   dllm-base: 6bebda1 (session 49's code), dllm: 6af0218 (session 50's, gate_up's 192-row units
#   in their final form, never run on an H200), dllm-rope: 6af0218 with
#   docs/perf/session50/rope-rows-first.patch (qk_norm_rope_store's head rows before the position).
# The test binaries are the rope build's (its kernel is the one changed). Built here by
# `bash tools/carry-ab.sh 6bebda1`, then the patch applied, `cargo build --release` and
# `cargo test --release --no-run` copied in as dllm-rope and the gzipped test binaries.
# Steps print host_ms (a7a61bd: the step's wall less the host's wait on the device). A fourth way,
# `graphs`: dllm with `--cuda-graph-max-bs 256` (SGLang's default on H100 and H200 below TP 4) at
# batch 64 and 128: ours defaults to 64, so batch 128 has run eagerly in every figure so far.
# Bench kernels and the knob sweep are call2's (the 600 s a call).
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
  for way in base new rope graphs; do
    b=$C/dllm; [ $way = base ] && b=$C/dllm-base; [ $way = rope ] && b=$C/dllm-rope
    args="--batch 1,16,64,128"; [ $way = graphs ] && args="--batch 64,128 --cuda-graph-max-bs 256"
    smi=; [ $way = new ] || [ $way = graphs ] && { nvidia-smi --query-gpu=memory.used --format=csv,noheader -lms 500 > $R/mem-$way-$i.txt 2>&1 & smi=$!; }
    timeout 120 $b bench step $M $args --json $R/step-$way-$i.json > $R/step-$way-$i.txt 2>&1
    rc=$?; [ -n "$smi" ] && kill $smi 2>/dev/null
    echo "step $way $i rc=$rc peak $(sort -n $R/mem-$way-$i.txt 2>/dev/null | tail -1) $(grep -E '^ +[0-9]+ (random|mask) ' $R/step-$way-$i.txt | awk '{printf "b%s %s  ", $1, $5}')"
    grep -h "host time\|graphs recorded\|rror\|warning" $R/step-$way-$i.txt | cut -c1-300
  done
  pack
done
echo "steps: ${SECONDS}s"
pack
for way in new rope; do
  b=$C/dllm; [ $way = base ] && b=$C/dllm-base; [ $way = rope ] && b=$C/dllm-rope
  timeout 60 $b bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 \
      --json $R/generate-$way.json > $R/generate-$way.txt 2>&1
  echo "generate $way rc=$?"; grep -h "tokens/s\|rror\|warning" $R/generate-$way.txt | cut -c1-200
done
echo "generate: ${SECONDS}s"
pack
echo "total: ${SECONDS}s"
pack
