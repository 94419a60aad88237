#!/usr/bin/env bash
# Session 50's first call: the 192-row expert items (moe_gemm_ws with a third accumulator, by
# setmaxnreg; taken from 96 rows an expert on average). `.carry` from `bash tools/gpu-test.sh` at
# the session's HEAD (the test binaries gzipped). ~7 minutes:
# 1. the CUDA suite and the fixtures (every_item_size forces 192-row items at 24, 150 and 600
#    tokens; mid_shape_ops_match_cpu's 600 tokens take them by default), memcheck of the mid shape;
# 2. steps at batch 64 and 128, the default (192-row items at 128) against --moe-item-rows 128
#    (the code before), interleaved twice; batch 64 once with 192 forced;
# 3. bench kernels at batch 128 both ways; prefill 4,096 x 8 and bench generate both ways.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/device-suite.sh "$R"
echo "suite: ${SECONDS}s"
pack
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
way_args() { [ "$1" = m128 ] && echo "--moe-item-rows 128"; }
for i in 1 2; do
  for way in m128 new; do
    timeout 100 $C/dllm bench step $M --batch 64,128 $(way_args $way) --json $R/step-$way-$i.json > $R/step-$way-$i.txt 2>&1
    echo "step $way $i rc=$?"; grep -E "^ +[0-9]+ (random|mask) |rror" $R/step-$way-$i.txt | cut -c1-150
  done
done
timeout 60 $C/dllm bench step $M --batch 64 --moe-item-rows 192 > $R/step-b64-m192.txt 2>&1
echo "step b64 forced 192 rc=$?"; grep -E "^ +[0-9]+ (random|mask) |rror" $R/step-b64-m192.txt | cut -c1-150
echo "steps: ${SECONDS}s"
pack
for way in m128 new; do
  timeout 120 $C/dllm bench kernels --preset mini --device cuda --prefix 1024 --batch 128 $(way_args $way) > $R/kernels-b128-$way.txt 2>&1
  echo "kernels b128 $way rc=$?"; grep -i "moe_gate_up\|moe_down\|rror" $R/kernels-b128-$way.txt | cut -c1-160
done
pack
for way in m128 new; do
  timeout 60 $C/dllm bench prefill --preset mini --device cuda --prompt-len 4096 --batch 8 $(way_args $way) \
      --json $R/prefill-4096x8-$way.json > $R/prefill-4096x8-$way.txt 2>&1
  echo "prefill 4096x8 $way rc=$?"; grep -E "^ +[0-9]|rror" $R/prefill-4096x8-$way.txt | cut -c1-160
done
for way in m128 new; do
  timeout 60 $C/dllm bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 $(way_args $way) \
      --json $R/generate-$way.json > $R/generate-$way.txt 2>&1
  echo "generate $way rc=$?"; grep -h "tokens/s\|rror\|warning" $R/generate-$way.txt | cut -c1-200
done
echo "perf: ${SECONDS}s"
pack
bash tools/memcheck-tests.sh "$R" cuda::mid_shape_ops_match_cpu
echo "total: ${SECONDS}s"
pack
