#!/usr/bin/env bash
# Session 47's third call (.carry as call1's). At batch 64 and 128, realistic routing: what each
# kernel of one step moves from DRAM (ncu, one pass: time and DRAM bytes a kernel), and
# `bench kernels` at batch 128 (session 46 ran it at 1 and 64 only).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
timeout 120 $C/dllm bench kernels --preset mini --device cuda --block 32 --prefix 1024 --batch 128 > "$R/k-balanced-b128.txt" 2>&1
grep -v "^ *$" "$R/k-balanced-b128.txt" | cut -c1-150 | head -30
pack
# What the expert tiles and the attention move from DRAM at batch 64, realistic routing: one
# pass of time and DRAM bytes per kernel of one step (tools/profile.sh ncu).
OUT=$R/ncu-b64 BATCH=64 LAUNCHES=400 timeout 200 bash tools/profile.sh ncu > "$R/ncu-b64.txt" 2>&1
tail -3 "$R/ncu-b64.txt"
python3 - "$R/ncu-b64/dllm-step-kernels.csv" <<'PY' 2>&1 | tee "$R/ncu-b64-sum.txt"
import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1])))
h = rows[0]; k = h.index("Kernel Name"); t = h.index("gpu__time_duration.sum")
rd = h.index("dram__bytes_read.sum"); wr = h.index("dram__bytes_write.sum")
units = rows[1]
def val(x, u):
    x = float(x.replace(",", ""))
    return x * {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1}.get(u, 1)
agg = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0])
for r in rows[2:]:
    a = agg[r[k].split("(")[0][:60]]
    a[0] += 1; a[1] += val(r[t], units[t]); a[2] += val(r[rd], units[rd]); a[3] += val(r[wr], units[wr])
print("kernel calls ms GB_read GB_write GB/s")
for n, (c, s, b, w) in sorted(agg.items(), key=lambda x: -x[1][1]):
    print(f"{n} {c} {s*1e3:.3f} {b/1e9:.3f} {w/1e9:.3f} {(b+w)/s/1e9 if s else 0:.0f}")
PY
pack
