#!/usr/bin/env bash
# Session 16, call 1: the tests with the L2 prefetch of the next dense GEMMs' weights (on by
# default at <= 512 rows), then the step with it forced on and off (same binary, interleaved).
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
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16,64"
for i in 1 2; do
  for v in true false; do
    timeout 90 $C/dllm $S --l2-prefetch $v > $R/step-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-80
L="bench step --preset mini --device cuda --block 32 --prefix 32736 --steps 4 --batch 1,8"
for v in true false; do
  timeout 90 $C/dllm $L --l2-prefetch $v > $R/long-$v.txt 2>&1
done
grep -H "^ *[0-9]" $R/long-*.txt | sed 's|.*/r/||' | cut -c1-80
for v in true false; do
  timeout 60 $C/dllm bench kernels --preset mini --device cuda --batch 1 --prefix 1024 --steps 4 --l2-prefetch $v > $R/k-b1-$v.txt 2>&1
done
grep -H "qkv\|attention out\|router logits\|sum of" $R/k-b1-*.txt | sed 's|.*/r/||'
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu cuda_graph_replay > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY" $R/memcheck-tests.txt
# Every kernel's own duration (ncu serializes them: no launch gaps) over an eager batch-1 run; the
# last step's launches are the tail of the list.
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
timeout 170 $NCU --metrics gpu__time_duration.sum,launch__grid_size --csv --launch-count 2500 \
  $C/dllm bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 2 --batch 1 --disable-cuda-graph > $R/ncu-durations-b1.csv 2>&1
echo "ncu rc=$? lines $(wc -l < $R/ncu-durations-b1.csv)"
cd $OUT && tar czf r.tgz r
