#!/usr/bin/env bash
# Runs ON the GPU machine, from the repo root, after `source tools/device-call.sh` (whose
# exported pack it calls after each launch, where there is one):
# ncu of one launch each of the expert tiles of `dllm bench kernels`' timed steps at batch 64 and
# 128 (sessions 64-67): DRAM, L2 and tensor-pipe use, and the L2's sectors by where they come
# from (the SMs, the other L2 partition's fabric, where this ncu has the metric), to size what
# crosses the L2. One output file a launch in OUT (ncu-bB-KERNEL.txt), batch 64's two first.
# A launch starts only while the script has run under STOP_AFTER seconds; each gets PER_RUN.
#   bash tools/ncu-expert-tiles.sh "$R" .carry/dllm-base 420 150
set -uo pipefail
usage="usage: tools/ncu-expert-tiles.sh OUT BINARY STOP_AFTER_S PER_RUN_S"
R=${1:?$usage}
BIN=${2:?$usage}
STOP_AFTER=${3:?$usage}
PER_RUN=${4:?$usage}
mkdir -p "$R"
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
MET="sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,lts__t_sector_hit_rate.pct"
for m in lts__t_sectors_srcunit_tex.sum lts__t_sectors_srcunit_ltcfabric.sum lts__t_sectors_srcunit_tex_op_read.sum lts__t_sectors_srcunit_tex_op_write.sum; do
    $NCU --query-metrics 2>/dev/null | grep -q "^${m%.sum} " && MET="$MET,$m"
done
echo "metrics: $MET"
NM="--clock-control none --section SpeedOfLight --metrics $MET"
# The launches of the timed steps, as batch:kernel:launches to skip. Before them run the router
# balancing's 3 forwards x 19 MoE layers (57; m128 tiles at 66 picks an expert), then the prefix
# prefill's forwards of 8,192 rows (m192 gate_up, m128 down; 8 x 19 = 152 at batch 64, 16 x 19
# = 304 at 128); gate_up at batch 64 has no m128 launch in the prefill.
for spec in 64:moe_gate_up_m128_ws:62 64:moe_down_m128_ws:214 128:moe_gate_up_m192_ws:310 128:moe_down_m128_ws:370; do
    [ $SECONDS -gt "$STOP_AFTER" ] && break
    IFS=: read -r b k skip <<<"$spec"
    timeout "$PER_RUN" $NCU $NM -k regex:"^$k\$" --launch-skip $skip --launch-count 1 \
        "$BIN" bench kernels --preset mini --device cuda --prefix 1024 --batch $b > "$R/ncu-b$b-$k.txt" 2>&1
    echo "ncu b$b $k skip $skip rc=$? (${SECONDS}s)"
    grep -E "\(132, 1, 1\)|Duration|Throughput|pipe_tensor|bytes|sectors|ERROR|==WARNING==" "$R/ncu-b$b-$k.txt" | head -16
    if declare -F pack >/dev/null; then pack; fi
done
