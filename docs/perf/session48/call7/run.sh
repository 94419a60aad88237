#!/usr/bin/env bash
# Session 48's seventh call, prepared and NOT run (no machine could be started): where a prefill
# forward's time goes (bench generate spends ~22% of its time prefilling 64 prompts of 1,024
# tokens). `.carry` from `bash tools/gpu-test.sh` and `bash tools/kernel-trace/build.sh` at HEAD.
# The kernel timeline of `bench prefill` at 4,096 x 8 (four
# forwards of 8,192 tokens, then the first block's), per kernel summed over the middle layers.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/t.tsv timeout 150 $C/dllm bench prefill \
  --preset mini --device cuda --prompt-len 4096 --batch 8 > $R/traced-prefill.txt 2>&1
echo "traced rc=$? (${SECONDS}s)"; grep -E "^ +[0-9]" $R/traced-prefill.txt | cut -c1-140
python3 tools/kernel-trace/timeline.py $R/t.tsv --steps 6 --gaps 5 > $R/timeline-prefill.txt 2>&1
python3 - $R/t.tsv > $R/prefill-kernel-sums.txt <<'PY'
import sys, collections
sys.path.insert(0, "tools/kernel-trace")
from timeline import load, is_copy, steps_of
# Kernel time summed by name over the timed prefill's forwards: the last five forwards (four of
# 8,192 prompt tokens, then the first block's), each from its embed_gather.
tot, n = collections.Counter(), collections.Counter()
fwds = steps_of([k for k in load(sys.argv[1]) if not is_copy(k)])[-5:]
print("forwards:", [len(f) for f in fwds], "kernels;", [round((f[-1]["end"] - f[0]["start"]) / 1e6, 2) for f in fwds], "ms spans")
for k in (k for f in fwds for k in f):
    tot[k["name"]] += k["end"] - k["start"]; n[k["name"]] += 1
s = sum(tot.values())
for name, v in tot.most_common(25):
    print(f"{v/1e6:10.3f} ms {100*v/s:5.1f}% {n[name]:6d}  {name}")
print(f"{s/1e6:10.3f} ms in all")
PY
head -30 $R/prefill-kernel-sums.txt
rm -f $R/t.tsv
pack
