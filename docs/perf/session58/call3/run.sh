#!/usr/bin/env bash
# Session 58's third call: where a step's host time goes. `.carry/dllm-probe` is HEAD with a
# probe (not landed; docs/perf/session58/host-probe.patch): host checkpoints through
# Engine::step, forward_pick, the graph replay and the picks' two downloads, each gap's median
# printed per batch after the timed steps. Batch 1, 16, 64 and 128, once.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
$C/dllm-probe bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128 > $R/probe.txt 2>&1
echo "rc=$?"
awk '/^PROBE/{n++} n%3==0 && n>0' $R/probe.txt | head -80
grep -A8 "^batch tokens" $R/probe.txt; grep "device idle\|host time" $R/probe.txt
pack
echo "total: ${SECONDS}s"
