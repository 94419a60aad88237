#!/usr/bin/env bash
# Session 60's fifth call (the last of its device time): lm_head_pick_merge combining a row's parts
# with pick_combine (83a9425; it repeated the combine inline with expf), and memcheck of the two
# dense-tile kernels' tests. 1. the pick's test and mid's ops; 2. memcheck of
# lm_head_pick_forms_match_cpu and qkv_rope_store_fused_matches_cpu.
set -uo pipefail
R=$OUT/r
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/cuda-tests.sh $R lm_head_pick_forms_match_cpu mid_shape_ops_match_cpu
pack
bash tools/memcheck-tests.sh $R lm_head_pick_forms_match_cpu qkv_rope_store_fused_matches_cpu
pack
echo "total: ${SECONDS}s"
