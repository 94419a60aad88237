#!/usr/bin/env bash
# Session 48's fourth call. `.carry` from `bash tools/carry-ab.sh HEAD` with the L2 eviction hints
# in the working tree (`dllm`: the experts' weight tiles of an expert's last item and the
# attention's K/V loaded by TMA as L2::evict_first; `dllm-base`: 35b3382, no hints). What it
# should save: the expert outputs (67 MB at batch 64) and the residual rows stay in the L2 for
# the norm after the down projection instead of being pushed out by 1.1 GB of weights a layer.
# 1. The CUDA suite and the fixtures with the hints (they change no result: a cache policy).
# 2. Interleaved, two rounds: dllm-base against dllm at batch 1-128, realistic routing.
# 3. bench prefill 4,096 x 1 and x 8, both binaries (an expert's earlier items keep the normal
#    policy, so the second item's reads still find its weights in the L2).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/device-suite.sh "$R"
echo "suite: ${SECONDS}s"
grep -h "panicked\|FAILED" $R/cuda-tests.txt | head
pack
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,4,16,64,128"
for i in 1 2; do
  timeout 80 $C/dllm-base bench step $B > $R/w-base-$i.txt 2>&1
  timeout 80 $C/dllm bench step $B > $R/w-new-$i.txt 2>&1
  for f in $R/w-base-$i.txt $R/w-new-$i.txt; do echo "$(basename $f) $(grep -E '^ +[0-9]+ random' $f | awk '{printf "%s ", $5}')$(grep -m1 -i error $f)"; done
  pack
done
echo "steps: ${SECONDS}s"
P="--preset mini --device cuda --prompt-len 4096 --batch 1,8"
for b in dllm-base dllm; do
  timeout 90 $C/$b bench prefill $P > $R/prefill-$b.txt 2>&1
  echo "$b: $(grep -E '^ +[0-9]' $R/prefill-$b.txt | cut -c1-110 | tr '\n' '|')"
done
echo "total: ${SECONDS}s"
pack
