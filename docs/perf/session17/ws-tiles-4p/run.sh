#!/usr/bin/env bash
# Session 17, call 8: the warp-specialized tiles with four producer warps (a producer warpgroup:
# 8 x-row copies a producer thread a stage at 128-row items; ws-tiles-2p/ had two warps) against
# the one-warpgroup tiles, same binary, interleaved; the whole CUDA test suite, the fixtures and
# memcheck first; an ncu of the 128-row gate_up at batch 64 last.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 100 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked" $R/cuda-tests.txt | head -5
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16,64,128"
for i in 1 2; do
  for w in true false; do
    timeout 110 $C/dllm $S --moe-ws-tiles $w > $R/step-$w-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
for b in 16 64 128; do
  for w in true false; do
    timeout 60 $C/dllm bench kernels --preset mini --device cuda --batch $b --prefix 1024 --steps 4 --moe-ws-tiles $w > $R/k-b$b-$w.txt 2>&1
    grep -H "moe_gate\|moe_down\|sum of\|rror" $R/k-b$b-$w.txt | sed 's|.*/r/||' | cut -c1-120
  done
done
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu > $R/memcheck-mid.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-mid.txt
grep -h "ERROR SUMMARY" $R/memcheck-mid.txt
NCU="ncu --clock-control none --section SpeedOfLight --section WarpStateStats --metrics dram__bytes_read.sum,lts__t_bytes.sum"
timeout 100 $NCU -k regex:'^moe_gate_up_m128_ws$' --launch-skip 190 --launch-count 1 $C/dllm bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 4 --disable-cuda-graph --mem-fraction-static 0.05 --batch 64 --moe-ws-tiles true > $R/ncu-b64-gate-up-m128-ws.txt 2>&1; echo "ncu rc=$?"
grep -E "Duration|DRAM Throughput|L2 Cache|Warp Cycles Per Issued|stall" $R/ncu-b64-gate-up-m128-ws.txt | head -12
cd $OUT && tar czf r.tgz r
