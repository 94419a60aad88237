#!/usr/bin/env bash
# Session 63's call1b, run inline on call1's warm H200 (.carry as call1's) and written here after
# it as its record: call1's traced runs failed at once (rc 2: its `--steps 8` came after
# `$M`'s `--steps 16`, which clap refuses), so the kernel timeline of traced steps at batch 128
# and 64 (4f58858's defaults) again, with the options given once.
R=$OUT/r; C=.carry; DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh $R >/dev/null; gunzip -f $C/dllm.gz
for b in 128 64; do
    CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/t.tsv timeout 120 $C/dllm bench step \
        --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch $b > $R/traced-b$b.txt 2>&1
    echo "traced b$b rc=$?"; tail -3 $R/traced-b$b.txt
    python3 tools/kernel-trace/timeline.py $R/t.tsv --steps 4 --gaps 5 > $R/timeline-b$b.txt 2>&1
    grep -m1 -A14 "^layer kind seen" $R/timeline-b$b.txt; grep "middle layer span" $R/timeline-b$b.txt
    rm -f $R/t.tsv
done
