#!/usr/bin/env bash
# Session 46's first device call, on one H200: the most that must run if no second call starts
# (sessions 44-45 prepared four calls; no machine started for any). `.carry` from
# `bash tools/carry-ab.sh e4b0d7a && bash tools/kernel-trace/build.sh` at 586e7cc.
# 1. The tests of code that has run on no GPU (sessions 43-45), one at a time within 90 s each
#    (a cluster barrier that never opens would hang its test), then the suite without them and
#    the fixtures. An option whose test fails is left out below.
# 2. Realistic routing (--balanced-router, session 45) against drawn, batch 1-128: the step and its
#    floor where a block reaches ~150 experts a layer. (The balanced PyTorch baseline:
#    docs/perf/session45/call1, a later call.)
# 3. Two rounds of session 44's A/B at drawn routing, batch 1, 4, 16, 64: dllm-base (e4b0d7a,
#    session 43), dllm with the options off (session 44's default-path load cuts), each option,
#    and all that passed.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/unpack-tests.sh test_cuda_kernels
SKIP=(); declare -A OK
for t in route_norm_matches_cpu attention_cluster_combine_matches_cpu slot_loads_together_match_bit_for_bit \
         row_argmax_matches_pick_row expert_bias_set_on_the_device_routes \
         cuda_graph_replay_equals_eager dense_routing_lockstep_matches_cpu; do
  SECONDS=0
  timeout 90 /tmp/test_cuda_kernels --test-threads=1 "$t" > $R/first-$t.txt 2>&1; rc=$?
  echo "first $t: rc=$rc ${SECONDS}s $(grep -h 'test result' $R/first-$t.txt | cut -c1-40)"
  [ $rc = 0 ] && OK[$t]=1
  SKIP+=(--skip "$t")
done
SECONDS=0
bash tools/device-suite.sh "$R" "${SKIP[@]}"
echo "suite: ${SECONDS}s"
grep -h "panicked\|FAILED" $R/cuda-tests.txt $R/first-*.txt | head -20
pack
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,4,16,64,128"
SECONDS=0
timeout 120 $C/dllm bench step $M --balanced-router --json "$R/step-mini-balanced.json" > "$R/step-mini-balanced.txt" 2>&1
echo "balanced: rc=$? ${SECONDS}s"
timeout 90 $C/dllm bench step $M --json "$R/step-mini-drawn.json" > "$R/step-mini-drawn.txt" 2>&1
for f in step-mini-balanced step-mini-drawn; do echo "== $f"; grep "balanc\|^ *[0-9]\|rror" $R/$f.txt | cut -c1-160; done
grep -l "rror\|panic" $R/*.txt
pack
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,4,16,64"
ok() { [ -n "${OK[$1]:-}" ]; }
ALL=""
ok route_norm_matches_cpu && ALL+=" --route-norm true"
ok attention_cluster_combine_matches_cpu && ALL+=" --att-cluster-combine true"
ok slot_loads_together_match_bit_for_bit && ALL+=" --slot-loads-together true"
echo "options that passed their tests:${ALL:- none}"
for i in 1 2; do
  SECONDS=0
  timeout 100 $C/dllm-base bench step $B > $R/s-base-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B > $R/s-off-$i.txt 2>&1
  ok route_norm_matches_cpu && timeout 100 $C/dllm bench step $B --route-norm true > $R/s-rn-$i.txt 2>&1
  ok attention_cluster_combine_matches_cpu && timeout 100 $C/dllm bench step $B --att-cluster-combine true > $R/s-cc-$i.txt 2>&1
  ok slot_loads_together_match_bit_for_bit && timeout 100 $C/dllm bench step $B --slot-loads-together true > $R/s-sl-$i.txt 2>&1
  [ -n "$ALL" ] && timeout 100 $C/dllm bench step $B $ALL > $R/s-all-$i.txt 2>&1
  echo "round $i: ${SECONDS}s"
  pack
done
for f in $R/s-*.txt; do echo "$(basename $f) $(grep -E '^ +[0-9]+ random' $f | awk '{printf "%s ", $5}')"; done
