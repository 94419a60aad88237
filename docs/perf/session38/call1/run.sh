#!/usr/bin/env bash
# Session 38, call 1: two experiments on flash with fp8 experts at batch 1 (issue 12's line), no
# code of HEAD changed. Binary b = HEAD + session 33's route-one patch (moe_route's rows over a
# non-portable cluster of 16 at <= 32 rows) + DENSE_STREAM_MAX_SMEM raised to 100 KB so that
# `--dense-stream` reaches flash's 4096-wide QKV and attention out (2 CTAs an SM). Steps
# interleaved, three runs each; `bench kernels` of a (HEAD) and of b with the dense stream; a
# traced step of b with the dense stream.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
gunzip -c $C/dllm-b.gz > /tmp/dllm-b && chmod +x /tmp/dllm-b
B="--device cuda --block 32 --prefix 1024 --steps 8"
F="--preset flash --quantization fp8 $B"
for i in 1 2 3; do
  timeout 90 $C/dllm bench step $F --batch 1 > $R/a-$i.txt 2>&1
  timeout 90 /tmp/dllm-b bench step $F --batch 1 > $R/b-$i.txt 2>&1
  timeout 90 /tmp/dllm-b bench step $F --batch 1 --dense-stream > $R/bds-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/a-*.txt $R/b-*.txt $R/bds-*.txt | sed 's|.*/r/||' | cut -c1-120
pack
for i in 1 2; do
  timeout 90 $C/dllm bench step --preset mini $B --batch 1 > $R/mini-a-$i.txt 2>&1
  timeout 90 /tmp/dllm-b bench step --preset mini $B --batch 1 > $R/mini-b-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/mini-*.txt | sed 's|.*/r/||' | cut -c1-120
pack
timeout 90 $C/dllm bench kernels $F --batch 1 > $R/k-a.txt 2>&1
timeout 90 /tmp/dllm-b bench kernels $F --batch 1 --dense-stream > $R/k-bds.txt 2>&1
pack
CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/f.tsv timeout 90 /tmp/dllm-b bench step $F --batch 1 --dense-stream > $R/traced-bds.txt 2>&1
python3 tools/kernel-trace/timeline.py $R/f.tsv --steps 4 --gaps 10 > $R/timeline-bds.txt 2>&1; rm -f $R/f.tsv
sed -n '/layer kind seen 1[0-9][0-9]/,/sum of/p' $R/timeline-bds.txt | cut -c1-120
grep -l "rror\|panic" $R/*.txt
pack
