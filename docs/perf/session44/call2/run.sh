#!/usr/bin/env bash
# Session 44's second device call, prepared and NOT run (no device was lent in session 44): after
# call1, on the same warm H200. `.carry` from `bash tools/carry-ab.sh` plus
# `bash tools/kernel-trace/build.sh` (.carry/libkernel_trace.so). The kernel timeline of mini's
# steps at batch 1 and 16 (prefix 1024), without and with both options (--route-norm,
# --att-cluster-combine): what each layer's chain spends, kernel by kernel, where the options
# change it. Batch 16 has no trace since session 32's; its 1.55-1.60x is the line closest to its
# 1.5x goal after batch 1.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 8"
for b in 1 16; do
  for way in off on; do
    opts=""; [ $way = on ] && opts="--route-norm true --att-cluster-combine true"
    CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/t.tsv timeout 90 $C/dllm bench step $B --batch $b $opts > $R/traced-b$b-$way.txt 2>&1
    python3 tools/kernel-trace/timeline.py $R/t.tsv --steps 4 --gaps 10 > $R/timeline-b$b-$way.txt 2>&1; rm -f $R/t.tsv
    echo "== batch $b, options $way"
    sed -n '/layer kind seen [0-9]* times/,/sum of/p' $R/timeline-b$b-$way.txt | head -16 | cut -c1-120
  done
  pack
done
