#!/usr/bin/env bash
# Session 46's fifth call (warm): our balancing with more rounds (--balance-rounds, this call's
# build of `dllm`), so that our batch-1 block reaches within 5% of the baseline's 160.9-162.6
# experts a layer (two rounds: 150.7, a speedup not quotable). Batch 1 at 3, 4 and 6 rounds; then
# batch 1-128 at 4 against the balanced baseline of docs/perf/session45/call1 (two rounds).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry; D=docs/perf/session46
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
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
