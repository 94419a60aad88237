#!/usr/bin/env bash
# Session 31, call 2: (a) every kernel asks for the largest shared memory carveout
# (`--max-smem-carveout`, default on), so that moe_route and block_attention_deep can start
# under the kernel before them (call 1's trace: they started only once it ended); (b) the
# post-attention norm zeroes the router's pick counts (no memset node before the router at
# batch 2 and up). Tests first; then steps interleaved: this build, the same with
# `--max-smem-carveout false`, and dllm_base (642b771); the trace of this build.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
gunzip -c $C/dllm_base.gz > /tmp/dllm_base && chmod +x /tmp/dllm_base
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape fused_router > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16 > $R/step-new-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16 --max-smem-carveout false > $R/step-nocarve-$i.txt 2>&1
  timeout 60 /tmp/dllm_base bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16 > $R/step-base-$i.txt 2>&1
done
for i in 1 2; do
  timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1 > $R/k32-new-$i.txt 2>&1
  timeout 90 /tmp/dllm_base bench step $M --prefix 32736 --steps 8 --batch 1 > $R/k32-base-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64 > $R/b64-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_base bench step $M --prefix 1024 --steps 8 --batch 64 > $R/b64-base-$i.txt 2>&1
done
trace() {  # name, then the dllm arguments
  local n=$1; shift
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/$n.tsv timeout 120 $C/dllm "$@" > $R/$n-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/$n.tsv --steps 4 > $R/$n-timeline.txt 2>&1
  gzip -f $R/$n.tsv
}
trace b1 bench step $M --prefix 1024 --steps 8 --batch 1
trace b4 bench step $M --prefix 1024 --steps 8 --batch 4
trace b16 bench step $M --prefix 1024 --steps 8 --batch 16
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt $R/k32-*.txt $R/b64-*.txt | sed 's|.*/r/||' | cut -c1-80
for f in $R/b1-timeline.txt $R/b4-timeline.txt; do echo "== $f"; sed -n 6,20p $f; done
cd $OUT && tar czf r.tgz r
