#!/usr/bin/env bash
# Session 51's first call (one H200 asked for): three builds side by side.
#   dllm-base: 6bebda1 (session 49's code), dllm: 6b8eafb (session 50's code, gate_up's 192-row
#   units in their final form, never run on an H200, plus the attention's ping-pong knob, off by
#   default, and --cuda-graph-bs), dllm-rope: 6b8eafb with
#   docs/perf/session50/rope-rows-first.patch (qk_norm_rope_store's head rows before the position).
# The test binaries are the rope build's (its kernel is the one changed; the attention variants
# test runs the ping-pong). Built here by `bash tools/carry-ab.sh 6bebda1`, then the patch
# applied, `cargo build --release` and `cargo test --release --no-run` copied in as dllm-rope and
# the gzipped test binaries.
# Steps print host_ms (a7a61bd: the step's wall less the host's wait on the device). A fourth way,
# `graphs`: dllm with `--cuda-graph-max-bs 256` (SGLang's default on H100 and H200 below TP 4) at
# batch 64 and 128: ours defaults to 64, so batch 128 has run eagerly in every figure so far. A
# fifth, `pingpong`: dllm with `--att-pingpong true` (block_attention_deep's consumers taking
# turns to issue their products). Bench generate, kernels and the knob sweep are call2's.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=/tmp/bins
# The three binaries come gzipped (with the tracked tree, the carry limit is 64 MiB).
mkdir -p $C; for f in dllm dllm-base dllm-rope; do gunzip -c .carry/$f.gz > $C/$f && chmod +x $C/$f; done
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
# The ping-pong's test alone first, under a short limit: a consumer left waiting at a turn would
# hang the suite for its whole limit. If it fails, the suite skips it and the steps drop the way.
bash tools/unpack-tests.sh test_cuda_kernels
timeout 90 /tmp/test_cuda_kernels --test-threads=1 --exact cuda::attention_variants_match_cpu > $R/att-variants.txt 2>&1
att=$?; echo "attention variants rc=$att ${SECONDS}s"; grep -h "test result\|panicked" $R/att-variants.txt | head -3
ways="base new rope graphs pingpong"; skip=
[ $att = 0 ] || { ways="base new rope graphs"; skip="--skip attention_variants_match_cpu"; }
bash tools/device-suite.sh "$R" $skip
echo "suite: ${SECONDS}s"
pack
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
for i in 1 2; do
  for way in $ways; do
    b=$C/dllm; [ $way = base ] && b=$C/dllm-base; [ $way = rope ] && b=$C/dllm-rope
    args="--batch 1,16,64,128"; [ $way = graphs ] && args="--batch 64,128 --cuda-graph-max-bs 256"
    [ $way = pingpong ] && args="--batch 1,16,64,128 --att-pingpong true"
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
echo "total: ${SECONDS}s"
pack
