#!/usr/bin/env bash
# Session 32, call 4. dllm: moe_router_select selecting in registers (route_select.cuh, as
# moe_route) and counting its picks a CTA of 16 tokens at once (one global atomic an expert a
# CTA, where moe_router_select_wide, the old kernel, takes one a pick); dllm_c341: c341fae's build
# (call 3's). Tests; traces of batch 16, 64 and a 4,096-token prefill; steps interleaved.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
for b in dllm_c341 test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 mid_shape fused_router graph > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
trace() {  # name, binary, then the dllm arguments
  local n=$1 bin=$2; shift 2
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/$n.tsv timeout 120 $bin "$@" > $R/$n-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/$n.tsv --steps 4 > $R/$n-timeline.txt 2>&1
  rm -f $R/$n.tsv
}
trace prefill $C/dllm bench prefill $M --prompt-len 4096 --batch 1
trace b64 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64
trace b16 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16
for f in $R/*-timeline.txt; do echo "== $f"; sed -n 7,22p $f | cut -c1-75; tail -1 $f; done
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16 > $R/step-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_c341 bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16 > $R/step-base-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64,128 > $R/wide-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_c341 bench step $M --prefix 1024 --steps 8 --batch 64,128 > $R/wide-base-$i.txt 2>&1
  timeout 120 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-new-$i.txt 2>&1
  timeout 120 /tmp/dllm_c341 bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-base-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt $R/wide-*.txt $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-100
cd $OUT && tar czf r.tgz r
