#!/usr/bin/env bash
# Session 42, call 1 (after session 41's call 1, run this session as docs/perf/session42/call0/:
# next-x-codes-in-norm.patch measured level at batch 16 and 0.2 ms a step slower at 64, so it is
# left out here). `dllm` and the test binaries: HEAD with ra-tile-pipeline.patch and
# quantize-rows-vec.patch and dense_routing_w8a8_lockstep_matches_cpu not strict (its drift
# reported and bounded); `dllm-base`: HEAD (tools/carry-ab.sh). The suite; mini fp8 at batch 8-64
# both ways, interleaved, twice; `bench kernels` at batch 16 and 64 (quantize_rows_fp8's row
# alone against base); then session42/call2's figures on `dllm`.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/device-suite.sh "$R"
grep -h "W8A8 dense routing\|panicked" $R/cuda-tests.txt | head -5
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do
  for bin in dllm dllm-base; do
    timeout 100 $C/$bin bench step --preset mini --quantization fp8 $B --batch 8,16,32,64 > $R/m-$bin-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/m-*.txt | sed 's|.*/r/||' | cut -c1-60
pack
K="--preset mini --quantization fp8 --device cuda --prefix 1024"
for b in 16 64; do
  for bin in dllm dllm-base; do
    timeout 100 $C/$bin bench kernels $K --batch $b > $R/k-$bin-b$b.txt 2>&1
  done
done
grep -H "quantize\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-110
pack
OUT=$OUT/c2 bash docs/perf/session42/call2/run.sh
