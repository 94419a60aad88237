#!/usr/bin/env bash
# Prepared in session 50, not run (no device time left): qk_norm_rope_store's vector form with
# the warp's head rows loaded before the token's position (rope-rows-first.patch: all six of a
# warp's heads at batch 64 and up, ROPE_VEC_HEADS 6, registers capped at 64 as now). The rope
# store runs at 37% of the copy ceiling at batch 128 on the H200 (0.652 ms a step, session 50
# call 1) and 35.5% at batch 64 (session 49 call 3): three to four dependent memory latencies a
# CTA. Build: `git apply docs/perf/session50/rope-rows-first.patch && bash tools/carry-ab.sh`
# (dllm: patched; dllm-base: HEAD), then `git checkout csrc`. ~5 min: the CUDA suite and the
# fixtures on the patched build; steps at batch 1, 16, 64 and 128 interleaved twice; bench kernels
# at 64 and 128 both ways (the qk_norm_rope_store rows).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/device-suite.sh "$R"
echo "suite: ${SECONDS}s"
pack
bash tools/ab-steps.sh "$R" 2 --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
echo "steps: ${SECONDS}s"
pack
for b in 64 128; do
  for way in base new; do
    bin=$C/dllm; [ $way = base ] && bin=$C/dllm-base
    timeout 120 $bin bench kernels --preset mini --device cuda --prefix 1024 --batch $b > $R/kernels-b$b-$way.txt 2>&1
    echo "kernels b$b $way rc=$?"; grep -i "qk_norm_rope\|sum of\|rror" $R/kernels-b$b-$way.txt | cut -c1-160
  done
done
echo "total: ${SECONDS}s"
pack
