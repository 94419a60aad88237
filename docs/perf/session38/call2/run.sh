#!/usr/bin/env bash
# Session 38, call 2: the working tree (moe_route_wide: one cluster's rows over 16 CTAs; the
# shared expert's items first among the fp8 16-row tiles'). The CUDA suite and fixtures;
# memcheck of the router test (both clusters) and of the 16-row items test (shared items first
# and last); then each knob against the default, interleaved, three runs each at flash fp8
# batch 1 and 4, two at mini bf16 batch 1 and mini fp8 batch 1 and 4; a traced flash fp8 step.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
F="--preset flash --quantization fp8 $B"
for i in 1 2 3; do
  timeout 90 $C/dllm bench step $F --batch 1,4 > $R/f-def-$i.txt 2>&1
  timeout 90 $C/dllm bench step $F --batch 1 --wide-route false > $R/f-nowide-$i.txt 2>&1
  timeout 90 $C/dllm bench step $F --batch 1,4 --shared-items-first false > $R/f-nofirst-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/f-*.txt | sed 's|.*/r/||' | cut -c1-120
pack
for i in 1 2; do
  timeout 90 $C/dllm bench step --preset mini $B --batch 1 > $R/m-def-$i.txt 2>&1
  timeout 90 $C/dllm bench step --preset mini $B --batch 1 --wide-route false > $R/m-nowide-$i.txt 2>&1
  timeout 90 $C/dllm bench step --preset mini --quantization fp8 $B --batch 1,4 > $R/mq-def-$i.txt 2>&1
  timeout 90 $C/dllm bench step --preset mini --quantization fp8 $B --batch 1,4 --shared-items-first false > $R/mq-nofirst-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/m-*.txt $R/mq-*.txt | sed 's|.*/r/||' | cut -c1-120
pack
CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/f.tsv timeout 90 $C/dllm bench step $F --batch 1 > $R/traced.txt 2>&1
python3 tools/kernel-trace/timeline.py $R/f.tsv --steps 4 --gaps 10 > $R/timeline.txt 2>&1; rm -f $R/f.tsv
sed -n '/layer kind seen 1[0-9][0-9]/,/sum of/p' $R/timeline.txt | cut -c1-120
pack
for t in fused_router_matches_cpu small_items_long_k_match_cpu; do
  timeout 140 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 $t > $R/memcheck-$t.txt 2>&1
  echo "memcheck $t rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-$t.txt
done
grep -l "rror\|panic" $R/*.txt
pack
