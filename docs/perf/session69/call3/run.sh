#!/usr/bin/env bash
# Session 69 call3, any card: the sampler's cluster size at large batch. sample_rows_bf16 takes
# 1.29 ms of an H100's batch-128 step (s68 call5) for ~0.33 ms of DRAM time: its waves of rows are
# bound by per-row cluster barriers and dependent latencies (session 36), and a cluster of 4 CTAs
# a row puts 132 rows in flight (3,136 rows at batch 128: ~24 waves). Fewer CTAs a row halve the
# waves again, at more tokens a CTA. Three builds of 9c77d81 differing only in params.h's
# SAMPLE_CLUSTER: .carry/dllm (4, as landed), dllm-c2 (2), dllm-c1 (1), and the CUDA test binary
# of each of the last two.
#  1. The sampler's CPU-twin test (sample_kernel_matches_sample_row_u) on the c2 and c1 builds.
#  2. `bench kernels` sampled (temperature 0.7, top-p 0.9) at batch 128 and 16, each build.
#  3. Sampled steps at batch 1, 16, 64 and 128, two interleaved rounds of the three builds.
set -uo pipefail
source tools/device-call.sh
for c in c2 c1; do
    cp $C/test_cuda_kernels_$c /tmp/t_$c && chmod +x /tmp/t_$c
    timeout 120 /tmp/t_$c --test-threads=1 sample_kernel_matches_sample_row_u > $R/test-$c.txt 2>&1
    echo "$c test rc=$? $(grep -h 'test result\|near-ties' $R/test-$c.txt | tr '\n' ' ')"
done
pack
S="--temperature 0.7 --top-p 0.9"
for b in 128 16; do
    for v in dllm dllm-c2 dllm-c1; do
        timeout 80 $C/$v bench kernels --preset mini --device cuda --prefix 1024 --batch $b $S > $R/k-$v-b$b.txt 2>&1
        echo "$v b$b rc=$? $(grep -hE '^sample_rows|sum of kernel' $R/k-$v-b$b.txt | tr -s ' ' | cut -c1-90 | tr '\n' ' ')"
    done
    pack
done
echo "kernels: ${SECONDS}s"
W="c4:$C/dllm:$S;c2:$C/dllm-c2:$S;c1:$C/dllm-c1:$S"
timeout $((580 - SECONDS)) bash tools/ab-ways.sh $R/ab 2 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,16,64,128
pack
echo "total: ${SECONDS}s"
