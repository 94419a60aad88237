#!/usr/bin/env bash
# Session 57's sixth call, prepared and not run (a failed start, then no device time left): the own
# rope's fifth form (`rope-in-attention-5.patch` on bbfd34f: call4's staging, a row a half-warp,
# half the instructions a row; call5's ncu found the fourth form's prologue bound by its
# instructions). `.carry` from `bash tools/carry-ab.sh bbfd34f` with the patch applied: `dllm`
# (`--rope-in-attention` on by default) against the same binary with it off and `dllm-base`.
# 1. the attention's CUDA tests, the expert path's and graph replay (tools/cuda-tests.sh); 2. steps
# at batch 1, 16, 64 and 128, the three ways interleaved, two rounds; 3. `bench kernels` at batch
# 1 and 64, off and on; 4. `bench generate`, the three ways (2-4 by tools/ab-ways.sh); 5. memcheck
# of attention_variants_match_cpu.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/cuda-tests.sh $R attention_variants_match_cpu mid_shape_ops_match_cpu cuda_graph_replay_equals_eager
rc=$?
pack
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; exit 1; }
W="base:$C/dllm-base;off:$C/dllm:--rope-in-attention false;on:$C/dllm"
bash tools/ab-ways.sh $R 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
pack
for b in 1 64; do
  bash tools/ab-ways.sh $R/kernels-b$b 1 "${W#*;}" kernels --preset mini --device cuda --prefix 1024 --batch $b
  grep -h "block_attention_deep\|qk_norm_rope" $R/kernels-b$b/*.txt | tr -s ' ' | cut -c1-60
done
pack
bash tools/ab-ways.sh $R 1 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
timeout 150 bash tools/memcheck-tests.sh $R attention_variants_match_cpu
pack
echo "total: ${SECONDS}s"
