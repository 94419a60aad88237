#!/usr/bin/env bash
# Session 55's second call: three ways of the expert tiles, from `.carry/dllm-base` (HEAD,
# 3b704c5 = 26d9358's code) and `.carry/dllm` (the tree with ../split-rings-down-x-tma.patch applied; tools/carry-ab.sh):
#   base:  HEAD;
#   split: split rings (128-row items: 5 weight stages of 32 KB beside 4 x stages of 16 KB, the
#          weights a k-step ahead), down's act rows copied (`--moe-down-x-tma false`);
#   tma:   split rings, down's act rows by TMA from a tensor map in its parameters (the default).
# 1. the CUDA tests that check the tiles against their CPU twins (both down forms: every_item_size);
# 2. `bench kernels` at 64 and 128 each way; 3. steps at batch 64 and 128, the three ways
# interleaved, two rounds; base's steps at batch 1, 4, 16 once (issue 13's lines at HEAD);
# 4. `bench generate` (64 requests, 2 a step) each way. Issue 13's lines are judged on an H200.
# (In that order, most telling first: the session's device time was nearly spent.)
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/unpack-tests.sh test_cuda_kernels test_model_vs_fixtures
timeout 150 /tmp/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu small_items_long_k rank_shapes_ops wide_heads_ops \
    tiny_ops_match_cpu cuda_graph_replay_equals_eager > $R/cuda-tests.txt 2>&1
echo "tests rc=$? (${SECONDS}s)"; grep -h "test result\|panicked\|FAILED" $R/cuda-tests.txt | head
pack
way_cmd() { case $1 in base) echo "$C/dllm-base";; split) echo "$C/dllm";; tma) echo "$C/dllm";; esac; }
way_args() { [ $1 = split ] && echo "--moe-down-x-tma false"; }
for way in base split tma; do
  for batch in 64 128; do
    timeout 90 $(way_cmd $way) bench kernels --preset mini --device cuda --prefix 1024 --batch $batch $(way_args $way) > $R/kernels-b$batch-$way.txt 2>&1
    echo "kernels b$batch $way rc=$? $(grep -E 'moe_(gate_up|down)' $R/kernels-b$batch-$way.txt | awk '{printf "%s %s %s%%  ", $1, $2, $NF}')"
  done
done
pack
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
for round in 1 2; do
  for way in base split tma; do
    timeout 90 $(way_cmd $way) bench step $M --batch 64,128 $(way_args $way) > $R/w-$way-$round.txt 2>&1
    echo "$way-$round rc=$? $(grep -E '^ +[0-9]+ (random|mask) ' $R/w-$way-$round.txt | awk '{printf "b%s %s %sx  ", $1, $5, $11}')"
  done
done
echo "steps (${SECONDS}s)"; pack
timeout 90 $C/dllm-base bench step $M --batch 1,4,16 --json $R/step-base-small.json > $R/step-base-small.txt 2>&1
echo "base b1-16 rc=$? $(grep -E '^ +[0-9]+ (random|mask) ' $R/step-base-small.txt | awk '{printf "b%s %s %sx  ", $1, $5, $11}')"
for way in base split tma; do
  timeout 60 $(way_cmd $way) bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 $(way_args $way) \
      --json $R/generate-$way.json > $R/generate-$way.txt 2>&1
  echo "generate $way rc=$? $(grep -h 'tokens/s' $R/generate-$way.txt | cut -c1-120)"
done
pack
echo "total: ${SECONDS}s"
