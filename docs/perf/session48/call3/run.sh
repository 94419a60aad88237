#!/usr/bin/env bash
# Session 48's third device call, same .carry as call2. Why block_attention_deep runs at ~60% of
# the copy bandwidth at batch 64 and 128 (call2: 87 us a layer at batch 64, ~43 us a CTA of 17
# chunks; 166 at 128): ncu's full set on one of its launches inside a batch-64 step (kernel
# replay), and its source counters.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
timeout 420 ncu --nvtx --nvtx-include "dllm@step/" --kernel-name block_attention_deep --launch-skip 3 --launch-count 1 \
  --set full --import-source yes -o $R/att-b64 -f \
  $C/dllm bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 3 --batch 64 > $R/ncu-att.txt 2>&1
echo "ncu rc=$? (${SECONDS}s)"; tail -5 $R/ncu-att.txt
ncu --import $R/att-b64.ncu-rep --page details > $R/att-b64-details.txt 2>&1
grep -E "Duration|Throughput|Stall|Warp Cycles|Issued|Eligible|Active Warps|Registers|Achieved|L2 Hit|Theoretical Occ|Block Limit|Bandwidth" $R/att-b64-details.txt | head -60
ncu --import $R/att-b64.ncu-rep --page raw --csv --metrics regex:smsp__pcsamp_warps_issue_stalled_.*  > $R/att-b64-stalls.csv 2>&1
python3 - $R/att-b64-stalls.csv <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
if len(rows) > 2:
    h, u, v = rows[0], rows[1], rows[2]
    pairs = [(h[i], v[i]) for i in range(len(h)) if h[i].startswith("smsp__pcsamp")]
    def num(x):
        try: return float(x.replace(",", ""))
        except ValueError: return 0.0
    for k, x in sorted(pairs, key=lambda p: -num(p[1]))[:14]: print(k, x)
PY
pack
