#!/usr/bin/env bash
# Session 46's third call (warm, after docs/perf/session45/call1): memcheck of the tests of
# sessions 43-45's kernels; the 32k lines at realistic routing; flash fp8 and the prefill against
# dllm-base (session 44's load cuts in their kernels).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/unpack-tests.sh test_cuda_kernels
SECONDS=0
bash tools/memcheck-tests.sh "$R" route_norm_matches_cpu attention_cluster_combine_matches_cpu slot_loads_together_match_bit_for_bit row_argmax_matches_pick_row expert_bias_set_on_the_device_routes
echo "memcheck: ${SECONDS}s"
pack
SECONDS=0
timeout 150 $C/dllm bench step --preset mini --device cuda --block 32 --prefix 32736 --steps 8 --batch 1,8 --balanced-router \
    --json "$R/step-32k-balanced.json" > "$R/step-32k-balanced.txt" 2>&1
echo "32k: rc=$? ${SECONDS}s"; grep "balanc\|^ *[0-9]\|rror" $R/step-32k-balanced.txt | cut -c1-160
pack
P="--preset mini --device cuda --prompt-len 4096 --batch 1"
for i in 1 2; do
  timeout 60 $C/dllm-base bench prefill $P > $R/p-base-$i.txt 2>&1
  timeout 60 $C/dllm bench prefill $P > $R/p-off-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/p-*.txt | sed 's|.*/r/||' | cut -c1-120
pack
F="--preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,16"
timeout 100 $C/dllm-base bench step $F > $R/f-base-1.txt 2>&1
timeout 100 $C/dllm bench step $F > $R/f-new-1.txt 2>&1
for f in $R/f-*.txt; do echo "$(basename $f) $(grep -E '^ +[0-9]+ random' $f | awk '{printf "%s ", $5}')"; done
pack
