#!/usr/bin/env bash
# Session 59's fifth call: lm_head_pick as landed (34bc433, tools/gpu-test.sh, stripped and
# gzipped; call3's kernel, call4's warpgroup skip reverted). `--fused-pick false` is cuBLAS then
# row_argmax, 239acaf's path. 1. the pick's test, graph replay, the fixtures; 2. `bench kernels` at
# batch 64 and 128, off and on; 3. steps at batch 1, 16, 64 and 128, off / on, three rounds;
# 4. `bench generate`, off / on, two rounds.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/cuda-tests.sh $R lm_head_pick_forms_match_cpu cuda_graph_replay_equals_eager
rc=$?
bash tools/unpack-tests.sh test_model_vs_fixtures
timeout 60 /tmp/test_model_vs_fixtures > "$R/fixtures.txt" 2>&1; echo "rc=$?" >> "$R/fixtures.txt"
grep -h "test result\|^rc=\|panicked\|FAILED" "$R/fixtures.txt" | head
pack
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; exit 1; }
W="off:$C/dllm:--fused-pick false;on:$C/dllm"
for b in 64 128; do
  bash tools/ab-ways.sh $R/kernels-b$b 1 "$W" kernels --preset mini --device cuda --prefix 1024 --batch $b
  grep -h "lm_head\|row_argmax" $R/kernels-b$b/*.txt | tr -s ' ' | cut -c1-100
done
pack
bash tools/ab-ways.sh $R 3 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
pack
bash tools/ab-ways.sh $R/generate 2 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
echo "total: ${SECONDS}s"
