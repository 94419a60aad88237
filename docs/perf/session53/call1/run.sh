#!/usr/bin/env bash
# Session 53's first call (one H200 asked for). `.carry` from `bash tools/gpu-test.sh` at the
# working tree (128-row expert items in pairs, a two-CTA cluster a pair multicasting an expert's
# weights; on by default from 192 rows an expert), dllm stripped, the test binaries gzipped, and
# `bash tools/kernel-trace/build.sh`.
# 1. mid_shape_ops_match_cpu alone (it forces the pairs at 24-1,200 tokens; 90 s: a hang shows
#    here), then the CUDA suite and the fixtures;
# 2. a 4,096 x 8 prefill's kernel time by name, pairs (the default there) and not;
# 3. bench prefill 4,096 x 8 and 1,024 x 64, pairs and not, two rounds interleaved;
# 4. steps at batch 128 (gate_up's 192-row units by default) against the pairs forced, twice;
# 5. bench generate, 64 requests, pairs (default) and not.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/unpack-tests.sh test_cuda_kernels test_model_vs_fixtures
timeout 90 /tmp/test_cuda_kernels --test-threads=1 --exact cuda::mid_shape_ops_match_cpu > $R/pairs-test.txt 2>&1
t=$?; echo "mid_shape_ops_match_cpu rc=$t ${SECONDS}s"; grep -h "test result\|panicked\|item pairs" $R/pairs-test.txt | head -12
pack
[ $t = 0 ] || { echo "pairs test failed: stopping"; tail -30 $R/pairs-test.txt; exit 1; }
bash tools/device-suite.sh "$R" --skip cuda::mid_shape_ops_match_cpu
echo "suite: ${SECONDS}s"
pack
sums() {  # kernel time by name over the last five forwards of a traced prefill
python3 - $1 <<'PY'
import sys, collections
sys.path.insert(0, "tools/kernel-trace")
from timeline import load, is_copy, steps_of
tot, n = collections.Counter(), collections.Counter()
fwds = steps_of([k for k in load(sys.argv[1]) if not is_copy(k)])[-5:]
print("forwards:", [len(f) for f in fwds], "kernels;", [round((f[-1]["end"] - f[0]["start"]) / 1e6, 2) for f in fwds], "ms spans")
for k in (k for f in fwds for k in f):
    tot[k["name"]] += k["end"] - k["start"]; n[k["name"]] += 1
s = sum(tot.values())
for name, v in tot.most_common(12):
    print(f"{v/1e6:10.3f} ms {100*v/s:5.1f}% {n[name]:6d}  {name}")
print(f"{s/1e6:10.3f} ms in all")
PY
}
for way in pairs plain; do
  extra=; [ $way = plain ] && extra="--moe-item-pairs false"
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/t.tsv timeout 150 $C/dllm bench prefill \
    --preset mini --device cuda --prompt-len 4096 --batch 8 $extra > $R/traced-prefill-$way.txt 2>&1
  echo "traced $way rc=$? (${SECONDS}s)"
  sums $R/t.tsv > $R/prefill-kernel-sums-$way.txt 2>&1; head -8 $R/prefill-kernel-sums-$way.txt
  rm -f $R/t.tsv
done
pack
for i in 1 2; do
  for way in pairs plain; do
    extra=; [ $way = plain ] && extra="--moe-item-pairs false"
    timeout 90 $C/dllm bench prefill --preset mini --device cuda --prompt-len 4096 --batch 8 $extra --json $R/prefill-4096x8-$way-$i.json > $R/prefill-4096x8-$way-$i.txt 2>&1
    echo "prefill 4096x8 $way $i rc=$? $(grep -E '^ +[0-9]' $R/prefill-4096x8-$way-$i.txt | cut -c1-120)"
    timeout 90 $C/dllm bench prefill --preset mini --device cuda --prompt-len 1024 --batch 64 $extra --json $R/prefill-1024x64-$way-$i.json > $R/prefill-1024x64-$way-$i.txt 2>&1
    echo "prefill 1024x64 $way $i rc=$? $(grep -E '^ +[0-9]' $R/prefill-1024x64-$way-$i.txt | cut -c1-120)"
    grep -h "rror" $R/prefill-*-$way-$i.txt | cut -c1-200
  done
  pack
done
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
for i in 1 2; do
  for way in m192 pairs; do
    extra=; [ $way = pairs ] && extra="--moe-item-pairs true"
    timeout 120 $C/dllm bench step $M --batch 128 $extra --json $R/step-$way-$i.json > $R/step-$way-$i.txt 2>&1
    echo "step $way $i rc=$? $(grep -E '^ +[0-9]+ (random|mask) ' $R/step-$way-$i.txt | awk '{printf "b%s %s %sx  ", $1, $5, $11}')"
    grep -h "rror" $R/step-$way-$i.txt | cut -c1-200
  done
  pack
done
echo "steps: ${SECONDS}s"
for way in pairs plain; do
  extra=; [ $way = plain ] && extra="--moe-item-pairs false"
  timeout 90 $C/dllm bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 $extra --json $R/generate-$way.json > $R/generate-$way.txt 2>&1
  echo "generate $way rc=$? ${SECONDS}s"; grep -h "tokens/s\|rror" $R/generate-$way.txt | cut -c1-200
  pack
done
echo "total: ${SECONDS}s"
pack
