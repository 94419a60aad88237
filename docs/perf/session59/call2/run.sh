#!/usr/bin/env bash
# Session 59's second call. `.carry` from `bash tools/carry-ab.sh 239acaf`: `dllm` is the working
# tree (qk_norm_rope_store_rows_d128 / _d256: bf16 QKV rows, the rows' loads before the
# position's chain, 8 elements a lane, two heads a warp at head dim 128), `dllm-base` 239acaf (the
# v4_bf16 kernel). 1. the rope's CUDA tests (the attention's, the mid-shape ops', graph replay);
# 2. `bench kernels` at batch 1, 64 and 128, both ways; 3. steps at batch 1, 16, 64, 128, two
# rounds; 4. a 4,096 x 8 prefill and `bench generate`; 5. memcheck of mid_shape_ops_match_cpu.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/cuda-tests.sh $R attention_variants_match_cpu mid_shape_ops_match_cpu tiny_ops_match_cpu cuda_graph_replay_equals_eager
rc=$?
pack
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; exit 1; }
W="base:$C/dllm-base;new:$C/dllm"
for b in 1 64 128; do
  bash tools/ab-ways.sh $R/kernels-b$b 1 "$W" kernels --preset mini --device cuda --prefix 1024 --batch $b
  grep -h "qk_norm_rope" $R/kernels-b$b/*.txt | tr -s ' ' | cut -c1-90
done
pack
bash tools/ab-ways.sh $R 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
pack
for i in 1 2; do
  for way in base new; do
    bin=$C/dllm; [ $way = base ] && bin=$C/dllm-base
    timeout 90 $bin bench prefill --preset mini --device cuda --prompt-len 4096 --batch 8 > $R/prefill-$way-$i.txt 2>&1
    echo "prefill $way $i:"; tail -4 $R/prefill-$way-$i.txt
  done
done
bash tools/ab-ways.sh $R/generate 1 "$W" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
timeout 160 bash tools/memcheck-tests.sh $R mid_shape_ops_match_cpu
pack
echo "total: ${SECONDS}s"
