#!/usr/bin/env bash
# Session 68 call5 (run as a one-line command on call4's warm H100, kept here as run): `bench
# kernels` at batch 128, greedy and sampled (temperature 0.7, top-p 0.9), to see where a sampled
# step's extra time goes. .carry/dllm as call1's.
source tools/device-call.sh >/dev/null 2>&1
for s in "" "--temperature 0.7 --top-p 0.9"; do
    timeout 80 $C/dllm bench kernels --preset mini --device cuda --prefix 1024 --batch 128 $s > $R/k-$([ -z "$s" ] && echo greedy || echo sampled).txt 2>&1
    echo rc=$?
done
grep -hE "lm_head|sample|argmax|sum of kernel" $R/k-*.txt | cut -c1-160
pack
