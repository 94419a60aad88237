#!/usr/bin/env bash
# Session 48's sixth call. `.carry` from `bash tools/carry-ab.sh HEAD` with block_attention_deep's
# CTAs persistent in the working tree (`dllm`; `dllm-base`: e7d2bd4, a CTA a work item). Batch 64
# and 128 at a 1k prefix have 256 and 512 work items on 132 SMs, so there each CTA now walks two
# to four; batch 1-16 have at most 128 and run one a CTA as before (the control).
# 1. The CUDA suite and the fixtures (attention_variants_match_cpu now also caps the deep
#    kernel's CTAs at 3 and 5, so each walks several items, empty splits among them).
# 2. Interleaved, two rounds: dllm-base against dllm at batch 1-128, realistic routing.
# 3. bench prefill 4,096 x 1 and x 8, both binaries.
# 4. memcheck of attention_variants_match_cpu.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/device-suite.sh "$R"
echo "suite: ${SECONDS}s"
grep -h "panicked\|FAILED\|failed" $R/cuda-tests.txt | head
pack
B="--preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 1,4,16,64,128"
for i in 1 2; do
  timeout 80 $C/dllm-base bench step $B > $R/w-base-$i.txt 2>&1
  timeout 80 $C/dllm bench step $B > $R/w-new-$i.txt 2>&1
  for f in $R/w-base-$i.txt $R/w-new-$i.txt; do echo "$(basename $f) $(grep -E '^ +[0-9]+ random' $f | awk '{printf "%s ", $5}')$(grep -m1 -i error $f)"; done
  pack
done
echo "steps: ${SECONDS}s"
P="--preset mini --device cuda --prompt-len 4096 --batch 1,8"
for b in dllm-base dllm; do
  timeout 90 $C/$b bench prefill $P > $R/prefill-$b.txt 2>&1
  echo "$b: $(grep -E '^ +[0-9]' $R/prefill-$b.txt | awk '{printf "%s x%s: %s ms | ", $1, $2, $4}')"
done
echo "prefill: ${SECONDS}s"
pack
timeout 150 bash tools/memcheck-tests.sh "$R" attention_variants_match_cpu
echo "memcheck rc=$? (${SECONDS}s)"; tail -3 $R/memcheck-*.txt 2>/dev/null | cut -c1-200
pack
