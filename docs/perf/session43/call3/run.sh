#!/usr/bin/env bash
# Session 43, call 3. `dllm` and the test binaries: row_argmax's clusters with the one-CTA form's
# unguarded rounds back (call 2: its guarded loop cost 5 us at batch 16 and 19 at 64), the
# pick test against the exact sums (call 2's failure was the CPU's sequential f32 sum, 1.5e-4
# off on a row of many equal logits); `dllm-base`: bde5430. The suite and memcheck of the pick
# test first; then base against new at batch 1, 4, 16, 64, four rounds, and `bench kernels` at
# batch 1, 4, 16, 64 both ways (row_argmax's row).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/device-suite.sh "$R" row_argmax_matches_pick_row
grep -h "row_argmax\|CUDA graphs\|panicked\|FAILED" $R/cuda-tests.txt | head -12
pack
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,4,16,64"
for i in 1 2 3 4; do
  timeout 100 $C/dllm-base bench step $B > $R/s-base-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B > $R/s-new-$i.txt 2>&1
done
for f in $R/s-*.txt; do echo "$(basename $f) $(grep -E '^ +[0-9]+ random' $f | awk '{printf "%s ", $5}')"; done
pack
for b in 1 4 16 64; do
  timeout 100 $C/dllm-base bench kernels --preset mini --device cuda --prefix 1024 --batch $b > $R/k-base-b$b.txt 2>&1
  timeout 100 $C/dllm bench kernels --preset mini --device cuda --prefix 1024 --batch $b > $R/k-new-b$b.txt 2>&1
done
grep -H "row_argmax\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-110
pack
