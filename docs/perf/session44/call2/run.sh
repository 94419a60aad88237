#!/usr/bin/env bash
# Session 44's second device call, prepared and NOT run (no device was lent in session 44): after
# call1, on the same warm H200. `.carry` from `bash tools/carry-ab.sh e4b0d7a` plus
# `bash tools/kernel-trace/build.sh` (.carry/libkernel_trace.so). Memcheck of the three new tests
# and of row_argmax_matches_pick_row (845c761's pick); `bench kernels` at batch 1 and 16 with the
# options off and on. Then the kernel timeline of mini's
# steps at batch 1 and 16 (prefix 1024), without and with the three options (--route-norm,
# --att-cluster-combine, --slot-loads-together): what each layer's chain spends, kernel by kernel, where the options
# change it. Batch 16 has no trace since session 32's; its 1.55-1.60x is the line closest to its
# 1.5x goal after batch 1.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/unpack-tests.sh test_cuda_kernels
bash tools/memcheck-tests.sh "$R" route_norm_matches_cpu attention_cluster_combine_matches_cpu slot_loads_together_match_bit_for_bit row_argmax_matches_pick_row
pack
for b in 1 16; do
  timeout 100 $C/dllm bench kernels --preset mini --device cuda --prefix 1024 --batch $b > $R/k-off-b$b.txt 2>&1
  timeout 100 $C/dllm bench kernels --preset mini --device cuda --prefix 1024 --batch $b --route-norm true --att-cluster-combine true --slot-loads-together true > $R/k-all-b$b.txt 2>&1
done
grep -H "moe_route\|add_rms_norm\|add_moe_rms_norm\|attention_combine\|block_attention\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-110
pack
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 8"
for b in 1 16; do
  for way in off on; do
    opts=""; [ $way = on ] && opts="--route-norm true --att-cluster-combine true --slot-loads-together true"
    CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/t.tsv timeout 90 $C/dllm bench step $B --batch $b $opts > $R/traced-b$b-$way.txt 2>&1
    python3 tools/kernel-trace/timeline.py $R/t.tsv --steps 4 --gaps 10 > $R/timeline-b$b-$way.txt 2>&1; rm -f $R/t.tsv
    echo "== batch $b, options $way"
    sed -n '/layer kind seen [0-9]* times/,/sum of/p' $R/timeline-b$b-$way.txt | head -16 | cut -c1-120
  done
  pack
done
