#!/usr/bin/env bash
# Session 60's sixth call, after the review (20fcdc8, 9b0f50a: dense_ws_row shared by both
# dense-tile epilogues, QkvRopeParams without col_tiles, the launches through
# launch_dense_tiles): the two kernels' tests against their CPU twins, graph replay, mid's ops.
set -uo pipefail
R=$OUT/r
source tools/device-env.sh "$R"
bash tools/cuda-tests.sh $R lm_head_pick_forms_match_cpu qkv_rope_store_fused_matches_cpu cuda_graph_replay_equals_eager mid_shape_ops_match_cpu
