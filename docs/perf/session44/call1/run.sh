#!/usr/bin/env bash
# Session 44's first device call, prepared and NOT run (no device was lent in session 44): the
# next session's first call, on one H200. `.carry` from `bash tools/carry-ab.sh` at HEAD (both
# options below live in the one binary; dllm-base is only the same commit).
# 1. The CUDA suite and the fixtures: 845c761's warp_pick (lm_head.cu) has run on no GPU yet; the
#    new tests are route_norm_matches_cpu, attention_cluster_combine_matches_cpu, and the graph
#    replay and dense-routing lockstep with each option on. Memcheck of the two new tests and of
#    row_argmax_matches_pick_row.
# 2. The two options against neither, one binary, four rounds interleaved, batch 1, 4, 16, 64
#    (route_norm applies at batch 1; the cluster combine where a step has 2-16 key splits: batch 1
#    and 16 at 1k; 4 and 64 are controls): CudaOptions::route_norm (--route-norm) and
#    CudaOptions::att_cluster_combine (--att-cluster-combine).
# 3. `bench kernels` at batch 1 both ways (moe_route's and add_rms_norm's rows, attention_combine's).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/device-suite.sh "$R" route_norm_matches_cpu attention_cluster_combine_matches_cpu row_argmax_matches_pick_row
grep -h "attention_combine launches\|clusters spared\|the norm in the router\|row_argmax\|CUDA graphs\|panicked\|FAILED" $R/cuda-tests.txt | head -30
pack
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,4,16,64"
for i in 1 2 3 4; do
  timeout 100 $C/dllm bench step $B > $R/s-off-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B --route-norm true > $R/s-rn-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B --att-cluster-combine true > $R/s-cc-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B --route-norm true --att-cluster-combine true > $R/s-both-$i.txt 2>&1
done
for f in $R/s-*.txt; do echo "$(basename $f) $(grep -E '^ +[0-9]+ random' $f | awk '{printf "%s ", $5}')"; done
pack
K="--preset mini --device cuda --prefix 1024 --batch 1"
timeout 100 $C/dllm bench kernels $K > $R/k-off.txt 2>&1
timeout 100 $C/dllm bench kernels $K --route-norm true --att-cluster-combine true > $R/k-both.txt 2>&1
grep -H "moe_route\|add_rms_norm\|attention_combine\|block_attention\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-110
pack
