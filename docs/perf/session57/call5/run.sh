#!/usr/bin/env bash
# Session 57's fifth call: where block_attention_deep's extra ~12 us a CTA goes with its own rope
# (the fourth form, call4's build) at batch 1: ncu's warp-state and instruction sections over two
# of the deep kernel's launches in steps (graphed), `--rope-in-attention` off and on, to tell a
# cold instruction cache (stalls on no instruction) from memory latency or the barriers.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
command -v ncu || export PATH=$PATH:$(dirname $(find / -xdev -name ncu -type f 2>/dev/null | head -1))
for way in off on; do
  timeout 200 ncu --nvtx --nvtx-include "dllm@step/" --kernel-name block_attention_deep --launch-skip 40 --launch-count 2 \
      --section SpeedOfLight --section WarpStateStats --section InstructionStats --section LaunchStats --force-overwrite -o $R/$way \
      $C/dllm bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 4 --batch 1 --rope-in-attention $([ $way = on ] && echo true || echo false) \
      > $R/ncu-$way.txt 2>&1
  echo "ncu $way rc=$? (${SECONDS}s)"; tail -2 $R/ncu-$way.txt
  ncu --import $R/$way.ncu-rep --print-details all > $R/details-$way.txt 2>&1
  grep -E "Duration|Warp Cycles|Executed Instructions|Issued Ipc" $R/details-$way.txt | head -12
  ncu --import $R/$way.ncu-rep --page raw --csv > $R/raw-$way.csv 2>&1
  python3 - $R/raw-$way.csv <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
h = rows[0]; data = [r for r in rows[2:] if len(r) == len(h)]
for r in data[:2]:
    st = sorted(((float(r[i] or 0), h[i]) for i in range(len(h)) if "issue_stalled" in h[i] and "per_warp_active" in h[i]), reverse=True)
    print(r[h.index("gpu__time_duration.sum")], "ns;", ", ".join(f"{n.split('issue_stalled_')[1].split('_per')[0]} {v:.2f}" for v, n in st[:8]))
PY
  pack
done
echo "total: ${SECONDS}s"
