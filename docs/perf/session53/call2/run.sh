#!/usr/bin/env bash
# Session 53's second call: why call1's item pairs ran slower (a 4,096 x 8 prefill's gate_up 75.6
# against 48.7 ms, down 40.3 against 27.9). Three builds of the pairs kernel (diagnosis only, built
# with defines at the top of csrc/moe_gemm.cu; .carry/dllm-VARIANT.gz, stripped and gzipped, with
# tools/kernel-trace/build.sh's library):
#   nomc:   no multicast (each CTA loads its own item's boxes), still in step (remote arrivals);
#   local:  no multicast and no remote arrivals (the CTAs only share the unit handoff);
#   static: as call1 (multicast, in step) but units taken by cluster index, no mailbox.
# Each: a traced 4,096 x 8 prefill's kernel time by name, and a batch-128 step; `local` also with
# the pairs off (the reference, as call1's plain).
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
for v in nomc local static; do gunzip -c $C/dllm-$v.gz > /tmp/dllm-$v && chmod +x /tmp/dllm-$v; done
for way in nomc local static local-plain; do
  b=/tmp/dllm-${way%-plain}; extra=; [ $way = local-plain ] && extra="--moe-item-pairs false"
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/t.tsv timeout 90 $b bench prefill \
    --preset mini --device cuda --prompt-len 4096 --batch 8 $extra > $R/traced-prefill-$way.txt 2>&1
  echo "traced $way rc=$? (${SECONDS}s) $(grep -E '^ +[0-9]' $R/traced-prefill-$way.txt | cut -c1-60)"
  python3 tools/kernel-trace/sums.py $R/t.tsv --most 8 > $R/prefill-kernel-sums-$way.txt 2>&1; sed -n 2,3p $R/prefill-kernel-sums-$way.txt
  awk '$10 ~ /^moe_(gate_up|down)/ {print $6 "x" $7, $10}' $R/t.tsv | sort | uniq -c | sort -rn | head -4  # grids
  rm -f $R/t.tsv
  pb=; [ $way = local-plain ] || pb="--moe-item-pairs true"
  timeout 90 $b bench step $M --batch 128 $pb --json $R/step-$way.json > $R/step-$way.txt 2>&1
  echo "step $way rc=$? $(grep -E '^ +[0-9]+ (random|mask) ' $R/step-$way.txt | awk '{printf "b%s %s %sx  ", $1, $5, $11}')"
  pack
done
echo "total: ${SECONDS}s"
