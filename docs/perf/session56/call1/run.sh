#!/usr/bin/env bash
# Session 56's first call: the router's L2 prefetch of each MoE layer's first experts' gate and up
# weights (`--moe-l2-prefetch-mb N`: moe_router_select asks the L2 for N/2 MB of each, which
# gate_up's first units read, while the router chain leaves DRAM idle), from `.carry/dllm`
# (the working tree) against `.carry/dllm-base` (3b704c5, code equal to HEAD's).
# 1. the CUDA tests of the expert path (mid_shape_ops_match_cpu holds a way with the prefetch on)
#    and graph replay; 2. steps at batch 16, 64 and 128 (realistic routing), base and 0 / 16 /
#    32 / 48 MB interleaved, two rounds; 3. prefill 4,096 x 8 and `bench generate`, base and 32.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/unpack-tests.sh test_cuda_kernels test_model_vs_fixtures
timeout 150 /tmp/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu cuda_graph_replay_equals_eager > $R/cuda-tests.txt 2>&1
echo "tests rc=$? (${SECONDS}s)"; grep -h "test result\|panicked\|FAILED" $R/cuda-tests.txt | head
pack
way_cmd() { case $1 in base) echo "$C/dllm-base";; *) echo "$C/dllm";; esac; }
way_args() { [ $1 != base ] && echo "--moe-l2-prefetch-mb $1"; }
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
for round in 1 2; do
  for way in base 0 16 32 48; do
    timeout 90 $(way_cmd $way) bench step $M --batch 16,64,128 $(way_args $way) > $R/w-$way-$round.txt 2>&1
    echo "$way-$round rc=$? $(grep -E '^ +[0-9]+ (random|mask) ' $R/w-$way-$round.txt | awk '{printf "b%s %s %sx  ", $1, $5, $11}')"
    grep -h "rror" $R/w-$way-$round.txt | cut -c1-200
  done
  pack
done
echo "steps (${SECONDS}s)"
for way in base 32; do
  timeout 90 $(way_cmd $way) bench prefill --preset mini --device cuda --prompt-len 4096 --batch 8 $(way_args $way) --json $R/prefill-$way.json > $R/prefill-$way.txt 2>&1
  echo "prefill 4096x8 $way rc=$? $(grep -E '^ +[0-9]' $R/prefill-$way.txt | cut -c1-120)"
done
for way in base 32; do
  timeout 60 $(way_cmd $way) bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 $(way_args $way) \
      --json $R/generate-$way.json > $R/generate-$way.txt 2>&1
  echo "generate $way rc=$? $(grep -h 'tokens/s' $R/generate-$way.txt | cut -c1-120)"
done
pack
echo "total: ${SECONDS}s"
