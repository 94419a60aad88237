#!/usr/bin/env bash
# Session 43, call 2 (call 1's build): the CUDA suite and the fixtures (row_argmax_matches_pick_row,
# new; cuda_graph_replay_equals_eager with the L2 prefetch's side stream forked and joined inside
# the graphs, the experts' prediction among them), memcheck of the new test and of the graph test.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/device-suite.sh "$R" row_argmax_matches_pick_row cuda_graph_replay_equals_eager
grep -h "row_argmax\|CUDA graphs\|panicked" $R/cuda-tests.txt | head -12
pack
