#!/usr/bin/env bash
# Session 38, call 3: the router's permute in CTA 0 (one cluster barrier after the selection
# instead of three). The CUDA suite and fixtures; memcheck and racecheck of the router test
# (moe_route_wide and moe_route at 1, 24, 32 rows permute); this build against d839a71's
# (dllm-prev), interleaved, three runs each: flash fp8 batch 1, mini bf16 batch 1, mini fp8
# batch 1; issue 13's lines (mini bf16 batch 1, 4, 16, 64), two runs; traced steps of flash fp8
# and mini bf16 at batch 1.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures dllm-prev; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
F="--preset flash --quantization fp8 $B"
for i in 1 2 3; do
  timeout 90 $C/dllm bench step $F --batch 1 > $R/f-new-$i.txt 2>&1
  timeout 90 /tmp/dllm-prev bench step $F --batch 1 > $R/f-prev-$i.txt 2>&1
  timeout 90 $C/dllm bench step --preset mini $B --batch 1 > $R/m-new-$i.txt 2>&1
  timeout 90 /tmp/dllm-prev bench step --preset mini $B --batch 1 > $R/m-prev-$i.txt 2>&1
  timeout 90 $C/dllm bench step --preset mini --quantization fp8 $B --batch 1 > $R/mq-new-$i.txt 2>&1
  timeout 90 /tmp/dllm-prev bench step --preset mini --quantization fp8 $B --batch 1 > $R/mq-prev-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/f-*.txt $R/m-*.txt $R/mq-*.txt | sed 's|.*/r/||' | cut -c1-120
pack
for i in 1 2; do
  timeout 120 $C/dllm bench step --preset mini $B --batch 1,4,16,64 > $R/lines-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/lines-*.txt | sed 's|.*/r/||' | cut -c1-120
pack
for m in "$F" "--preset mini $B"; do
  n=$(echo $m | awk '{print $2}')
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/t.tsv timeout 90 $C/dllm bench step $m --batch 1 > $R/traced-$n.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/t.tsv --steps 4 --gaps 10 > $R/timeline-$n.txt 2>&1; rm -f $R/t.tsv
  sed -n '/layer kind seen 1[0-9]* times/,/sum of/p' $R/timeline-$n.txt | head -16 | cut -c1-120
done
pack
timeout 140 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 fused_router_matches_cpu > $R/memcheck-router.txt 2>&1
echo "memcheck rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-router.txt
pack
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 fused_router_matches_cpu > $R/racecheck-router.txt 2>&1
echo "racecheck rc=$?"; grep -h "ERROR SUMMARY\|RACECHECK SUMMARY\|hazard" $R/racecheck-router.txt | head -5
grep -l "rror\|panic" $R/*.txt
pack
