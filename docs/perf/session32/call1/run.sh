#!/usr/bin/env bash
# Session 32, call 1. dllm (A): moe_router_select selecting in registers (route_select.cuh, as
# moe_route) and add_moe_rms_norm as down's programmatic dependent (--moe-norm-pdl, on by
# default in A); dllm_b (B): A with the 64-row wgmma tiles at 2 stages, four CTAs an SM;
# dllm_base: session 31's final build. Tests of A first; steps interleaved; traces of A; ncu of
# the small memory-bound kernels of a 4,096-token prefill.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
for b in dllm_base dllm_b test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 mid_shape fused_router moe_norm graph > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
trace() {  # name, binary, then the dllm arguments
  local n=$1 bin=$2; shift 2
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/$n.tsv timeout 120 $bin "$@" > $R/$n-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/$n.tsv --steps 4 > $R/$n-timeline.txt 2>&1
  gzip -f $R/$n.tsv
}
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16 > $R/step-a-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16 --moe-norm-pdl false > $R/step-a-nopdl-$i.txt 2>&1
  timeout 60 /tmp/dllm_b bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16 > $R/step-b-$i.txt 2>&1
  timeout 60 /tmp/dllm_base bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16 > $R/step-base-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-70
for i in 1 2; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64 > $R/b64-a-$i.txt 2>&1
  timeout 60 /tmp/dllm_base bench step $M --prefix 1024 --steps 8 --batch 64 > $R/b64-base-$i.txt 2>&1
  timeout 120 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-a-$i.txt 2>&1
  timeout 120 /tmp/dllm_base bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-base-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/b64-*.txt $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-110
trace b16 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16
trace b64 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64
trace b1 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1
trace b1-b /tmp/dllm_b bench step $M --prefix 1024 --steps 8 --batch 1
for f in $R/b16-timeline.txt $R/b64-timeline.txt $R/b1-timeline.txt $R/b1-b-timeline.txt; do echo "== $f"; sed -n 6,22p $f | cut -c1-80; tail -1 $f; done
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
timeout 150 $NCU --section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
  -k regex:'^(qk_norm_rope_store_v4|add_moe_rms_norm|add_rms_norm|moe_router_select)$' --launch-skip 12 --launch-count 8 \
  $C/dllm bench prefill $M --prompt-len 4096 --batch 1 --disable-cuda-graph --mem-fraction-static 0.05 > $R/ncu-prefill.txt 2>&1; echo "ncu rc=$?"
grep -E "^  [a-z_0-9]+ |Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|ERROR" $R/ncu-prefill.txt | head -60
cd $OUT && tar czf r.tgz r
