#!/usr/bin/env bash
# Session 60's fourth call: qkv_rope_store with its own register split (producers 56, consumers
# 224: call3's producers spilled in their k-step loop at lm_head_pick's 40). 1. the fused
# kernel's test, graph replay; 2. `bench kernels` at batch 64 and 128, off and on; 3. steps at
# batch 64 and 128, off / on, two rounds; 4. the whole CUDA suite and the fixtures (the fused
# kernel is off by default).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/cuda-tests.sh $R/fused qkv_rope_store_fused_matches_cpu cuda_graph_replay_equals_eager
rc=$?
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; grep -h -B2 -A12 "panicked" $R/fused/cuda-tests.txt | head -60; pack; exit 1; }
W="off:$C/dllm:--fused-qkv-rope false;on:$C/dllm:--fused-qkv-rope true"
for b in 64 128; do
  bash tools/ab-ways.sh $R/kernels-b$b 1 "$W" kernels --preset mini --device cuda --prefix 1024 --batch $b
  grep -h "qkv\|rope" $R/kernels-b$b/*.txt | tr -s ' ' | cut -c1-110
done
pack
bash tools/ab-ways.sh $R 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 64,128
pack
bash tools/cuda-tests.sh $R
bash tools/unpack-tests.sh test_model_vs_fixtures
timeout 60 /tmp/test_model_vs_fixtures > "$R/fixtures.txt" 2>&1; echo "rc=$?" >> "$R/fixtures.txt"
grep -h "test result\|^rc=\|panicked\|FAILED" "$R/fixtures.txt" | head
pack
echo "total: ${SECONDS}s"
