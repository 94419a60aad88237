#!/usr/bin/env bash
# Session 59's third call. `.carry` from `bash tools/carry-ab.sh 239acaf`: `dllm` is the working
# tree (greedy steps' lm_head as lm_head_pick, the GEMM with the pick in its epilogue, then
# lm_head_pick_merge: the logits never written; `--fused-pick false` is cuBLAS then row_argmax as
# before), 239acaf's binary left out (the carry limit). 1. the pick's test (both forms against the CPU), the mid-shape ops',
# graph replay, then the fixtures; 2. `bench kernels` at batch 1, 64 and 128, off and on; 3. steps
# at batch 1, 16, 64 and 128, off / on, two rounds (no base: the carry limit; off is 239acaf's path); 4. `bench generate`; 5. memcheck of
# the pick's test.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/cuda-tests.sh $R lm_head_pick_forms_match_cpu mid_shape_ops_match_cpu cuda_graph_replay_equals_eager
rc=$?
bash tools/unpack-tests.sh test_model_vs_fixtures
timeout 60 /tmp/test_model_vs_fixtures > "$R/fixtures.txt" 2>&1; echo "rc=$?" >> "$R/fixtures.txt"
grep -h "test result\|^rc=\|panicked\|FAILED" "$R/fixtures.txt" | head
grep -h "lm_head_pick\|near-tie" $R/cuda-tests.txt | head -20
pack
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; exit 1; }
W="off:$C/dllm:--fused-pick false;on:$C/dllm"
for b in 1 64 128; do
  bash tools/ab-ways.sh $R/kernels-b$b 1 "$W" kernels --preset mini --device cuda --prefix 1024 --batch $b
  grep -h "lm_head\|row_argmax" $R/kernels-b$b/*.txt | tr -s ' ' | cut -c1-100
done
pack
W="off:$C/dllm:--fused-pick false;on:$C/dllm"
bash tools/ab-ways.sh $R 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
pack
bash tools/ab-ways.sh $R/generate 1 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
timeout 120 bash tools/memcheck-tests.sh $R lm_head_pick_forms_match_cpu
pack
echo "total: ${SECONDS}s"
