#!/usr/bin/env bash
# Session 46's fifth call. `.carry` from `bash tools/carry-ab.sh e4b0d7a` at 6ac8025: session 44's
# options taken out (d793362, 734ddb7, cf96610: moe_route, moe_route_wide and
# block_attention_deep back at e4b0d7a's register counts), realistic routing by default.
# 1. The CUDA suite and the fixtures after the removal.
# 2. Two rounds of dllm (as drawn: --balanced-router false) against dllm-base (e4b0d7a, which
#    knows no balancing), batch 1, 4, 16, 64: call1's "off" again, on this build.
# 3. Our balancing with more rounds (--balance-rounds), so that our batch-1 block reaches within
#    5% of the baseline's 160.9-162.6 experts a layer (two rounds: 150.7, a speedup not quotable):
#    batch 1 at 3, 4 and 6 rounds; then batch 1-128 at 4 against the balanced baseline of call2.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry; D=docs/perf/session46
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/device-suite.sh "$R"
echo "suite: ${SECONDS}s"
grep -h "panicked\|FAILED" $R/cuda-tests.txt | head
pack
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,4,16,64"
for i in 1 2; do
  timeout 100 $C/dllm-base bench step $B > $R/s-base-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B --balanced-router false > $R/s-new-$i.txt 2>&1
done
for f in $R/s-*.txt; do echo "$(basename $f) $(grep -E '^ +[0-9]+ random' $f | awk '{printf "%s ", $5}')"; done
pack
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
for n in 3 4 6; do
  timeout 90 $C/dllm bench step $M --batch 1 --balanced-router --balance-rounds $n --baseline $D/baseline-mini-balanced.json > "$R/step-b1-r$n.txt" 2>&1
  echo "rounds $n: $(grep -o 'routes to.*as drawn' $R/step-b1-r$n.txt)"; grep "^ *[0-9]\|rror" $R/step-b1-r$n.txt | cut -c1-160
done
pack
timeout 150 $C/dllm bench step $M --batch 1,4,16,64,128 --balanced-router --balance-rounds 4 --baseline $D/baseline-mini-balanced.json \
    --json "$R/step-mini-balanced-r4.json" > "$R/step-mini-balanced-r4.txt" 2>&1
grep "balanc\|^ *[0-9]\|rror" $R/step-mini-balanced-r4.txt | cut -c1-160
pack
