#!/usr/bin/env bash
# Session 44's first device call, prepared and NOT run (no device was lent in session 44): the
# next session's first call, on one H200. `.carry` from `bash tools/carry-ab.sh e4b0d7a`:
# dllm-base is session 43's last build; the three options below live in the one binary, off by
# default, so `dllm` with none of them against `dllm-base` measures the default path's changes
# (the loads this session moved ahead of their uses: docs/perf/session44/README.md; 845c761 has
# the same SASS counts). Flash fp8 at batch 1 and 16 too (its expert epilogues changed).
# 1. The CUDA suite and the fixtures: 845c761's warp_pick (lm_head.cu) has run on no GPU yet; the
#    new tests are route_norm_matches_cpu, attention_cluster_combine_matches_cpu,
#    slot_loads_together_match_bit_for_bit, and the graph replay and dense-routing lockstep with
#    options on (memcheck of the new tests: call2).
# 2. dllm-base, then the options against none, one binary, four rounds interleaved, batch 1, 4,
#    16, 64 (route_norm applies at batch 1; the cluster combine where a step has 2-16 key
#    splits: batch 1 and 16 at 1k; the slot loads at every batch): --route-norm (CudaOptions::route_norm),
#    --att-cluster-combine (att_cluster_combine), --slot-loads-together (slot_loads_together),
#    and all three.
# 3. Flash fp8 at batch 1 and 16 against dllm-base; a 4,096-token prefill against dllm-base and
#    with the slot loads together (their kernel holds two CTAs an SM, not four).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/device-suite.sh "$R"
grep -h "attention_combine launches\|clusters spared\|the norm in the router\|slot rows\|differs\|row_argmax\|CUDA graphs\|panicked\|FAILED" $R/cuda-tests.txt | head -30
pack
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,4,16,64"
ALL="--route-norm true --att-cluster-combine true --slot-loads-together true"
for i in 1 2 3 4; do
  timeout 100 $C/dllm-base bench step $B > $R/s-base-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B > $R/s-off-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B --route-norm true > $R/s-rn-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B --att-cluster-combine true > $R/s-cc-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B --slot-loads-together true > $R/s-sl-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B $ALL > $R/s-all-$i.txt 2>&1
done
for f in $R/s-*.txt; do echo "$(basename $f) $(grep -E '^ +[0-9]+ random' $f | awk '{printf "%s ", $5}')"; done
pack
F="--preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,16"
timeout 120 $C/dllm-base bench step $F > $R/f-base-1.txt 2>&1  # one pair: flash's random weights take ~40 s a run
timeout 120 $C/dllm bench step $F > $R/f-new-1.txt 2>&1
for f in $R/f-*.txt; do echo "$(basename $f) $(grep -E '^ +[0-9]+ random' $f | awk '{printf "%s ", $5}')"; done
pack
P="--preset mini --device cuda --prompt-len 4096 --batch 1"
for i in 1 2; do
  timeout 100 $C/dllm-base bench prefill $P > $R/p-base-$i.txt 2>&1
  timeout 100 $C/dllm bench prefill $P > $R/p-off-$i.txt 2>&1
  timeout 100 $C/dllm bench prefill $P --slot-loads-together true > $R/p-sl-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/p-*.txt | sed 's|.*/r/||' | cut -c1-120
pack
