#!/usr/bin/env bash
# Session 65 call1 (session 64 call2 carried forward; that script now points here): session 64 call1's ncu again, on launches of the timed steps. Call1's fourth
# launch of each kernel fell before them: gate_up m128 and down m128 in bench's router-balancing
# forwards (2,112 rows, as-drawn routing: ~170 experts), gate_up m192 in the batch-128 bench's
# prefix prefill (8,192-row forwards). Skipped here: the balancing's 3 forwards x 19 MoE layers
# (m128 at 66 picks an expert), then the prefix prefill's forwards of 8,192 rows (m192 gate_up,
# m128 down; 16 forwards at batch 128, 8 at 64). .carry/dllm-base: the build of 46b1e2c (tools/gpu-test.sh).
# Per launch: DRAM, L2 and tensor-pipe use, the L2's bytes by where they come from (the SMs, the
# other L2 partition's fabric, where ncu has the metric), to size what crosses the L2.
set -uo pipefail
source tools/device-call.sh
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
MET="sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,lts__t_sector_hit_rate.pct"
for m in lts__t_sectors_srcunit_tex.sum lts__t_sectors_srcunit_ltcfabric.sum lts__t_sectors_srcunit_tex_op_read.sum lts__t_sectors_srcunit_tex_op_write.sum; do
    $NCU --query-metrics 2>/dev/null | grep -q "^${m%.sum} " && MET="$MET,$m"
done
echo "metrics: $MET"
NM="--clock-control none --section SpeedOfLight --metrics $MET"
# batch:kernel:launches to skip (balancing 57; gate_up at batch 64 has no m128 launch in the prefill (m192); prefill 8 x 19 = 152 at batch 64, 16 x 19 = 304 at 128)
for spec in 64:moe_gate_up_m128_ws:62 64:moe_down_m128_ws:214 128:moe_gate_up_m192_ws:310 128:moe_down_m128_ws:370; do
    [ $SECONDS -gt 420 ] && break
    IFS=: read -r b k skip <<<"$spec"
    timeout 150 $NCU $NM -k regex:"^$k\$" --launch-skip $skip --launch-count 1 \
        $C/dllm-base bench kernels --preset mini --device cuda --prefix 1024 --batch $b > $R/ncu-b$b-$k.txt 2>&1
    echo "ncu b$b $k skip $skip rc=$? (${SECONDS}s)"
    grep -E "\(132, 1, 1\)|Duration|Throughput|pipe_tensor|bytes|sectors|ERROR|==WARNING==" $R/ncu-b$b-$k.txt | head -16
    pack
done
echo "total: ${SECONDS}s"
