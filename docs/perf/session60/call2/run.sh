#!/usr/bin/env bash
# Session 60's second call (call1's, after its test took the weight stream at 32 rows: the test now turns the stream off): qkv_rope_store (the QKV projection with the QK norm, RoPE and K/V
# stores in its epilogue; tools/gpu-test.sh at the call's tree, stripped and gzipped).
# `--fused-qkv-rope false` is cuBLAS then qk_norm_rope_store, 357cb4f's path; the default fuses
# from 1,024 rows (batch 32); `--fused-qkv-rope-min-rows 1` fuses every batch.
# 1. the fused kernel's test (both rotations), the pick's, graph replay, mid's ops; the fixtures;
# 2. `bench kernels` at batch 64 and 128, off and on; 3. steps at batch 1, 16, 64 and 128,
# off / on / on at every batch, two rounds.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/cuda-tests.sh $R qkv_rope_store_fused_matches_cpu lm_head_pick_forms_match_cpu cuda_graph_replay_equals_eager mid_shape_ops_match_cpu
rc=$?
grep -h "qkv_rope_store launched\|not available" $R/cuda-tests.txt | head -4
bash tools/unpack-tests.sh test_model_vs_fixtures
timeout 60 /tmp/test_model_vs_fixtures > "$R/fixtures.txt" 2>&1; echo "rc=$?" >> "$R/fixtures.txt"
grep -h "test result\|^rc=\|panicked\|FAILED" "$R/fixtures.txt" | head
pack
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; grep -h -B2 -A12 "panicked" $R/cuda-tests.txt | head -60; exit 1; }
W="off:$C/dllm:--fused-qkv-rope false;on:$C/dllm"
for b in 64 128; do
  bash tools/ab-ways.sh $R/kernels-b$b 1 "$W" kernels --preset mini --device cuda --prefix 1024 --batch $b
  grep -h "qkv\|rope" $R/kernels-b$b/*.txt | tr -s ' ' | cut -c1-110
done
pack
W3="off:$C/dllm:--fused-qkv-rope false;on:$C/dllm;all:$C/dllm:--fused-qkv-rope-min-rows 1"
bash tools/ab-ways.sh $R 2 "$W3" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
pack
echo "total: ${SECONDS}s"
