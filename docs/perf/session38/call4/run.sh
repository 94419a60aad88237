#!/usr/bin/env bash
# Session 38, call 4: the fp8 16-row tiles' down CTAs waiting for their own item's gate_up CTAs
# (item counters) instead of for gate_up's end (CudaOptions::item_wait). The CUDA suite and
# fixtures; memcheck of the 16-row items test and of the fp8 mid-shape test; racecheck of the
# 16-row items test; the knob on and off, interleaved, three runs each: flash fp8 batch 1 and 4,
# mini fp8 batch 1 and 4; a traced flash fp8 step.
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
  timeout 90 $C/dllm bench step $F --batch 1,4 > $R/f-on-$i.txt 2>&1
  timeout 90 $C/dllm bench step $F --batch 1,4 --item-wait false > $R/f-off-$i.txt 2>&1
  timeout 90 $C/dllm bench step --preset mini --quantization fp8 $B --batch 1,4 > $R/mq-on-$i.txt 2>&1
  timeout 90 $C/dllm bench step --preset mini --quantization fp8 $B --batch 1,4 --item-wait false > $R/mq-off-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/f-*.txt $R/mq-*.txt | sed 's|.*/r/||' | cut -c1-120
pack
CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/t.tsv timeout 90 $C/dllm bench step $F --batch 1 > $R/traced.txt 2>&1
python3 tools/kernel-trace/timeline.py $R/t.tsv --steps 4 --gaps 10 > $R/timeline.txt 2>&1; rm -f $R/t.tsv
sed -n '/layer kind seen 1[0-9]* times/,/sum of/p' $R/timeline.txt | head -16 | cut -c1-120
pack
for t in small_items_long_k_match_cpu mid_shape_fp8_ops_match_cpu; do
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 $t > $R/memcheck-$t.txt 2>&1
  echo "memcheck $t rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-$t.txt
done
pack
timeout 120 compute-sanitizer --tool racecheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 small_items_long_k_match_cpu > $R/racecheck.txt 2>&1
echo "racecheck rc=$?"; grep -h "RACECHECK SUMMARY\|ERROR SUMMARY" $R/racecheck.txt; grep -o "at [a-z_0-9]*+0x" $R/racecheck.txt | sort | uniq -c | head
pack
