#!/usr/bin/env bash
# Session 33, call 8: moe_route_one (one cluster's rows, <= 32, over 16 CTAs: each reads half
# the router's weight slice; a non-portable cluster size) against b94e2ca (dllm_b94: 8 CTAs).
# Tests; batch 1-8 steps interleaved; batch-1 traces.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
for b in dllm_b94 test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 fused_router > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,8 > $R/step-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_b94 bench step $M --prefix 1024 --steps 8 --batch 1,4,8 > $R/step-base-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
trace() {  # name, binary, then the dllm arguments
  local n=$1 bin=$2; shift 2
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/$n.tsv timeout 120 $bin "$@" > $R/$n-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/$n.tsv --steps 4 > $R/$n-timeline.txt 2>&1
  rm -f $R/$n.tsv
}
trace b1-new $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1
trace b1-base /tmp/dllm_b94 bench step $M --prefix 1024 --steps 8 --batch 1
for n in b1-new b1-base; do echo "== $n"; grep -E "moe_route|add_rms_norm|moe_gate_up|middle" $R/$n-timeline.txt | head -4 | cut -c1-90; done
cd $OUT && tar czf r.tgz r
