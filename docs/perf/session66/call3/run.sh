#!/usr/bin/env bash
# Session 66 call3: call2's ncu (docs/perf/session65/call1/run.sh, run on an H100 as call2) on an
# H200, to see whether there the L2 reaches its peak before DRAM does, as the H100's figures
# suggest (L2 87-90%, DRAM 79-85%). Same launches (the timed steps', by launch counts), batch 64
# first; .carry/dllm-base is e7ced1c's build (the session's HEAD has the same src and csrc).
set -uo pipefail
source tools/device-call.sh
# Call2 has the H100's figures: on any other card this call ends here.
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: nothing to do"; exit 0; }
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
MET="sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,lts__t_sector_hit_rate.pct,lts__t_sectors_srcunit_tex.sum,lts__t_sectors_srcunit_ltcfabric.sum"
NM="--clock-control none --section SpeedOfLight --metrics $MET"
for spec in 64:moe_gate_up_m128_ws:62 64:moe_down_m128_ws:214 128:moe_gate_up_m192_ws:310 128:moe_down_m128_ws:370; do
    [ $SECONDS -gt 240 ] && break
    IFS=: read -r b k skip <<<"$spec"
    timeout 150 $NCU $NM -k regex:"^$k\$" --launch-skip $skip --launch-count 1 \
        $C/dllm-base bench kernels --preset mini --device cuda --prefix 1024 --batch $b > $R/ncu-b$b-$k.txt 2>&1
    echo "ncu b$b $k skip $skip rc=$? (${SECONDS}s)"
    grep -E "Duration|Throughput|hit_rate|bytes|sectors|pipe_tensor|ERROR" $R/ncu-b$b-$k.txt | head -14
    pack
done
echo "total: ${SECONDS}s"
