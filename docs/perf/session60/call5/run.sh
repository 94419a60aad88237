#!/usr/bin/env bash
# Session 60's fifth call: lm_head_pick_merge combining a row's parts with pick_combine (the
# epilogue's; it repeated it inline with expf), and memcheck of the two dense-tile kernels' tests.
# 1. the pick's test and the fixtures; 2. memcheck of qkv_rope_store_fused_matches_cpu and
# lm_head_pick_forms_match_cpu; 3. `bench kernels` at batch 64 (the merge's row).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/cuda-tests.sh $R lm_head_pick_forms_match_cpu mid_shape_ops_match_cpu
bash tools/unpack-tests.sh test_model_vs_fixtures
timeout 60 /tmp/test_model_vs_fixtures > "$R/fixtures.txt" 2>&1; echo "rc=$?" >> "$R/fixtures.txt"
grep -h "test result\|^rc=\|panicked\|FAILED" "$R/fixtures.txt" | head
pack
bash tools/memcheck-tests.sh $R lm_head_pick_forms_match_cpu qkv_rope_store_fused_matches_cpu
pack
timeout 60 $C/dllm bench kernels --preset mini --device cuda --prefix 1024 --batch 64 > $R/kernels-b64.txt 2>&1; echo "kernels rc=$?"
grep -h "lm_head\|sum of" $R/kernels-b64.txt | tr -s ' ' | cut -c1-110
pack
echo "total: ${SECONDS}s"
