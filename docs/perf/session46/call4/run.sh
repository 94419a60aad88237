#!/usr/bin/env bash
# Session 46's fourth call (warm): batch 1's baseline at fewer balancing rounds. At two rounds its
# block reached 162.6 experts a layer against our step's 150.7 (docs/perf/session45/call1): its
# step attends to random caches, whose hidden states spread more evenly than ours over real
# prompts, so no speedup could be quoted at batch 1 (the 5% rule). With 1 and 0 rounds (0: as
# drawn) its block reaches fewer; a speedup is quoted where one lands within 5% of ours. Ours
# again beside it, three times.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for n in 1; do
  SECONDS=0
  timeout 200 python3 tools/baseline_torch.py --preset mini --batch 1 --prefix 1024 --block 32 \
      --warmup 10 --iters 50 --variants triton --mask-frac 0 --balanced-router --balance-rounds $n \
      --json "$R/baseline-mini-balanced-r$n.json" > "$R/baseline-mini-balanced-r$n.log" 2>&1
  echo "baseline rounds $n rc=$? ${SECONDS}s"; grep "balanced" "$R/baseline-mini-balanced-r$n.log"; tail -n 2 "$R/baseline-mini-balanced-r$n.log" | cut -c1-80
  pack
done
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1"
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --balanced-router --baseline "$R/baseline-mini-balanced-r1.json" > "$R/step-b1-balanced-$i.txt" 2>&1
  grep "^ *[0-9]\|rror" $R/step-b1-balanced-$i.txt | cut -c1-160
done
pack
