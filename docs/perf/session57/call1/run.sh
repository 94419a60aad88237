#!/usr/bin/env bash
# Session 57's first call: block_attention_deep doing a step's QK norm, RoPE and K/V store itself
# (`--rope-in-attention`, on by default in `.carry/dllm`, the working tree) against the same binary
# with it off and against `.carry/dllm-base` (bbfd34f, HEAD).
# 1. the CUDA tests of the attention and the step (attention_variants_match_cpu checks the own
#    rope against the CPU twin and asserts it ran), graph replay, and memcheck of the attention
#    tests; 2. steps at batch 1, 16, 64 and 128 (realistic routing), base / off / on interleaved,
#    two rounds; 3. `bench kernels` at batch 64, off and on; 4. `bench generate`, base and on.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/unpack-tests.sh test_cuda_kernels
timeout 200 /tmp/test_cuda_kernels --test-threads=1 attention_variants_match_cpu mid_shape_ops_match_cpu tiny_ops_match_cpu \
    wide_heads_ops_match_cpu attention_combine_past_32_splits rank_shapes_ops_match_cpu cuda_graph_replay_equals_eager > $R/cuda-tests.txt 2>&1
rc=$?
echo "tests rc=$rc (${SECONDS}s)"; grep -h "test result\|panicked\|FAILED" $R/cuda-tests.txt | head
pack
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; exit 1; }
way_cmd() { case $1 in base) echo "$C/dllm-base";; *) echo "$C/dllm";; esac; }
way_args() { case $1 in off) echo "--rope-in-attention false";; esac; }
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
for round in 1 2; do
  for way in base off on; do
    timeout 100 $(way_cmd $way) bench step $M --batch 1,16,64,128 $(way_args $way) > $R/w-$way-$round.txt 2>&1
    echo "$way-$round rc=$? $(grep -E '^ +[0-9]+ (random|mask) ' $R/w-$way-$round.txt | awk '{printf "b%s %s %sx  ", $1, $5, $11}')"
    grep -h "rror" $R/w-$way-$round.txt | cut -c1-200
  done
  pack
done
echo "steps (${SECONDS}s)"
for way in off on; do
  timeout 60 $C/dllm bench kernels --preset mini --device cuda --prefix 1024 --batch 64 $(way_args $way) > $R/kernels-b64-$way.txt 2>&1
  echo "kernels b64 $way rc=$? $(grep -E 'block_attention|qk_norm|sum of kernel' $R/kernels-b64-$way.txt | tr -s ' ' | cut -c1-90 | tr '\n' '|')"
done
pack
for way in base on; do
  timeout 60 $(way_cmd $way) bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 \
      --json $R/generate-$way.json > $R/generate-$way.txt 2>&1
  echo "generate $way rc=$? $(grep -h 'tokens/s' $R/generate-$way.txt | cut -c1-120)"
done
pack
echo "(${SECONDS}s)"
timeout 150 bash tools/memcheck-tests.sh $R attention_variants_match_cpu
pack
echo "total: ${SECONDS}s"
