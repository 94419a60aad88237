#!/usr/bin/env bash
# Session 43, call 2 (call 1's build: `dllm` 8fd5d69, `dllm-base` bde5430): base against new at
# batch 1, 4, 16, 64, interleaved, four rounds (row_argmax's clusters; its one-CTA form, with the
# loop's guarded last round, from 133 rows on); `bench kernels` at batch 16 and 64 both ways
# (row_argmax's row); then the CUDA suite and the fixtures (row_argmax_matches_pick_row, new;
# cuda_graph_replay_equals_eager with the L2 prefetch's side stream inside the graphs), memcheck
# of the new test and of the graph test.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,4,16,64"
for i in 1 2 3 4; do
  timeout 100 $C/dllm-base bench step $B > $R/s-base-$i.txt 2>&1
  timeout 100 $C/dllm bench step $B > $R/s-new-$i.txt 2>&1
done
for f in $R/s-*.txt; do echo "$(basename $f) $(grep -E '^ +[0-9]+ random' $f | awk '{printf "%s ", $5}')"; done
pack
for b in 16 64; do
  timeout 100 $C/dllm-base bench kernels --preset mini --device cuda --prefix 1024 --batch $b > $R/k-base-b$b.txt 2>&1
  timeout 100 $C/dllm bench kernels --preset mini --device cuda --prefix 1024 --batch $b > $R/k-new-b$b.txt 2>&1
done
grep -H "row_argmax\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-110
pack
bash tools/device-suite.sh "$R" row_argmax_matches_pick_row cuda_graph_replay_equals_eager
grep -h "row_argmax\|CUDA graphs\|panicked" $R/cuda-tests.txt | head -12
pack
