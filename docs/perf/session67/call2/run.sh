#!/usr/bin/env bash
# Session 67 call2: call1 drew an H100; on an H200 only (the lines' card), in the ~150 s of device
# time left: sampled (temperature 0.7, top-p 0.9) against greedy steps at batch 16 and 64, one
# round each, then the ncu of call1's step 2 (session 65 call1's launches: the timed steps'
# expert tiles), batch 64's two first. .carry/dllm-base is 267b7e8's build.
set -uo pipefail
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: nothing to do"; exit 0; }
source tools/device-call.sh
W="greedy:$C/dllm-base;sampled:$C/dllm-base:--temperature 0.7 --top-p 0.9"
timeout 50 bash tools/ab-ways.sh $R/sampled 1 "$W" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 16,64
pack
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
MET="sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,lts__t_sector_hit_rate.pct"
MET="$MET,lts__t_sectors_srcunit_tex.sum,lts__t_sectors_srcunit_ltcfabric.sum"
NM="--clock-control none --section SpeedOfLight --metrics $MET"
for spec in 64:moe_gate_up_m128_ws:62 64:moe_down_m128_ws:214 128:moe_gate_up_m192_ws:310 128:moe_down_m128_ws:370; do
    [ $SECONDS -gt 100 ] && break
    IFS=: read -r b k skip <<<"$spec"
    timeout $((140 - SECONDS)) $NCU $NM -k regex:"^$k\$" --launch-skip $skip --launch-count 1 \
        $C/dllm-base bench kernels --preset mini --device cuda --prefix 1024 --batch $b > $R/ncu-b$b-$k.txt 2>&1
    echo "ncu b$b $k skip $skip rc=$? (${SECONDS}s)"
    grep -E "Duration|Throughput|pipe_tensor|bytes|sectors|ERROR|==WARNING==" $R/ncu-b$b-$k.txt | head -16
    pack
done
echo "total: ${SECONDS}s"
