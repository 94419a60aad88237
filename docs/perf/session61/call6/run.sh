#!/usr/bin/env bash
# Session 61's sixth call, after the final review (cde34a2: rope_outputs; 029e1fb:
# qkv_then_rope_store; host code only): the whole CUDA suite and the fixtures.
set -uo pipefail
R=$OUT/r
source tools/device-env.sh "$R"
SECONDS=0
bash tools/device-suite.sh $R
(cd $OUT && tar czf r.tgz r)
echo "total: ${SECONDS}s"
