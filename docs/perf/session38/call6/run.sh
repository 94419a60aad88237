#!/usr/bin/env bash
# Session 38, call 6: the item counters for the warp-specialized bf16 tiles (batch 64 up and
# prefill): each consumer warpgroup counts its share of a gate_up unit in the item's counter;
# down, now gate_up's programmatic dependent, has its producers wait for the item's units before
# they copy its act rows. The CUDA suite and fixtures; memcheck of the mid-shape and graph tests;
# the knob on and off, interleaved, two runs each: mini bf16 batch 64 and 128, prefill 4,096 x
# 1; then batch 1 and 16 and flash fp8 batch 1 once with the knob on.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do
  timeout 120 $C/dllm bench step --preset mini $B --batch 64,128 > $R/w-on-$i.txt 2>&1
  timeout 120 $C/dllm bench step --preset mini $B --batch 64,128 --item-wait false > $R/w-off-$i.txt 2>&1
  timeout 120 $C/dllm bench prefill --preset mini --device cuda --prompt-len 4096 --batch 1 > $R/p-on-$i.txt 2>&1
  timeout 120 $C/dllm bench prefill --preset mini --device cuda --prompt-len 4096 --batch 1 --item-wait false > $R/p-off-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/w-*.txt $R/p-*.txt | sed 's|.*/r/||' | cut -c1-130
pack
timeout 120 $C/dllm bench step --preset mini $B --batch 1,16 > $R/m-lines.txt 2>&1
timeout 90 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1 > $R/f.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/m-lines.txt $R/f.txt | sed 's|.*/r/||' | cut -c1-120
pack
for t in mid_shape_ops_match_cpu cuda_graph_replay_equals_eager; do
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 $t > $R/memcheck-$t.txt 2>&1
  echo "memcheck $t rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-$t.txt
done
pack
