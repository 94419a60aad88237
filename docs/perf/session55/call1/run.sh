#!/usr/bin/env bash
# Session 55's first call: the warp-specialized tiles' split rings (128-row items: 5 weight stages
# of 32 KB beside 4 x stages of 16 KB, each k-step's weights one step ahead of its x rows) as
# `.carry/dllm`, against HEAD before it (3b704c5, the code of 26d9358) as `.carry/dllm-base`
# (tools/carry-ab.sh). 1. the CUDA tests that check the expert tiles against their CPU twins, on
# the new build; 2. steps at batch 1-128 (prefix 1024, block 32, realistic routing), interleaved
# twice; 3. `bench kernels` at batch 64 and 128 both ways; 4. `bench generate` (64 requests, 2 a
# step) both ways. Issue 13's lines are judged on an H200; on an H100 the A/B still counts.
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
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
bash tools/ab-steps.sh "$R" 2 $M --batch 1,4,16,64,128
echo "steps (${SECONDS}s)"; pack
for way in base new; do
  b=$C/dllm; [ $way = base ] && b=$C/dllm-base
  for batch in 64 128; do
    timeout 90 $b bench kernels --preset mini --device cuda --prefix 1024 --batch $batch > $R/kernels-b$batch-$way.txt 2>&1
    echo "kernels b$batch $way rc=$? (${SECONDS}s) $(grep -E 'moe_(gate_up|down)' $R/kernels-b$batch-$way.txt | cut -c1-110 | tr -s ' ' | paste -sd'|')"
  done
  pack
done
for way in base new; do
  b=$C/dllm; [ $way = base ] && b=$C/dllm-base
  timeout 60 $b bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 --json $R/generate-$way.json > $R/generate-$way.txt 2>&1
  echo "generate $way rc=$? (${SECONDS}s) $(grep -h 'tokens/s' $R/generate-$way.txt | cut -c1-160)"
  pack
done
echo "total: ${SECONDS}s"
