#!/usr/bin/env bash
# Session 38, call 5: the item counters for the one-warpgroup bf16 wgmma tiles too (mini's
# experts at batch 1-32). The CUDA suite and fixtures; memcheck of the mid-shape test (the bf16
# tiles) and of the graph replay test; the knob on and off, interleaved, three runs each: mini
# bf16 batch 1, 4, 8, 16, 32; flash fp8 batch 1 two runs; mini bf16 batch 64 and 128 once; a
# traced mini bf16 step at batch 1.
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
for i in 1 2 3; do
  timeout 120 $C/dllm bench step --preset mini $B --batch 1,4,8,16,32 > $R/m-on-$i.txt 2>&1
  timeout 120 $C/dllm bench step --preset mini $B --batch 1,4,8,16,32 --item-wait false > $R/m-off-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/m-*.txt | sed 's|.*/r/||' | cut -c1-120
pack
for i in 1 2; do
  timeout 90 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1 > $R/f-$i.txt 2>&1
done
timeout 120 $C/dllm bench step --preset mini $B --batch 64,128 > $R/m-wide.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/f-*.txt $R/m-wide.txt | sed 's|.*/r/||' | cut -c1-120
pack
CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/t.tsv timeout 90 $C/dllm bench step --preset mini $B --batch 1 > $R/traced.txt 2>&1
python3 tools/kernel-trace/timeline.py $R/t.tsv --steps 4 --gaps 10 > $R/timeline.txt 2>&1; rm -f $R/t.tsv
sed -n '/layer kind seen [0-9]* times/,/sum of/p' $R/timeline.txt | head -14 | cut -c1-120
pack
for t in mid_shape_ops_match_cpu cuda_graph_replay_equals_eager; do
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 $t > $R/memcheck-$t.txt 2>&1
  echo "memcheck $t rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-$t.txt
done
pack
