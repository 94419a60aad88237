#!/usr/bin/env bash
# Session 56's second call: what cuBLAS runs for the dense GEMMs of a step (the lm_head, QKV, the
# attention's output projection, the router's logits, the shared expert), to size our own GEMM
# with the greedy pick in its epilogue (the next idea in the session's README). One ncu pass over
# one step's launches at batch 64 (graphed) and 128 (eager), `.carry/dllm-base` (3b704c5): each
# kernel's name (cuBLAS's names its tile and cluster), grid, block, cluster, registers, shared
# memory, time and DRAM bytes. No replay (metrics of one pass), so the step runs once per pass.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
command -v ncu || export PATH=$PATH:$(dirname $(find / -xdev -name ncu -type f 2>/dev/null | head -1))
M=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__block_size,launch__cluster_dim_x,launch__cluster_dim_y,launch__registers_per_thread,launch__shared_mem_per_block_dynamic,launch__waves_per_multiprocessor
for batch in 64 128; do
  timeout 240 ncu --nvtx --nvtx-include "dllm@step/" --launch-count 420 --metrics $M --force-overwrite -o $R/b$batch \
    $C/dllm-base bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 3 --batch $batch > $R/ncu-b$batch.txt 2>&1
  echo "ncu b$batch rc=$? (${SECONDS}s)"; tail -3 $R/ncu-b$batch.txt
  ncu --import $R/b$batch.ncu-rep --page raw --csv --metrics $M > $R/b$batch.csv 2>&1
  rm -f $R/b$batch.ncu-rep
  python3 - $R/b$batch.csv <<'PY'
import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1])))
h = rows[0]; data = [r for r in rows[2:] if len(r) == len(h)]
ki = h.index("Kernel Name"); ti = h.index("gpu__time_duration.sum")
agg = collections.OrderedDict()
for r in data:
    k = r[ki]
    if not any(s in k for s in ("gemm", "xmma", "cutlass", "sm90", "nvjet")): continue
    key = (k[:150], r[h.index("launch__grid_size")], r[h.index("launch__cluster_dim_x")], r[h.index("launch__cluster_dim_y")])
    a = agg.setdefault(key, [0, 0.0])
    a[0] += 1; a[1] += float(r[ti] or 0)
for (k, g, cx, cy), (n, t) in agg.items():
    print(f"{n:4d} x {t / n / 1000:8.1f} us  grid {g:>6} cluster {cx}x{cy}  {k}")
PY
  pack
done
echo "total: ${SECONDS}s"
