#!/usr/bin/env bash
# Session 16, call 2: the bf16 expert tiles as persistent CTAs pipelining across their units.
# Tests (every_item_size: all CTAs, 5 CTAs, a CTA a unit), sanitizers, then the step and the
# expert kernels with --moe-persistent true / false (same binary, interleaved).
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
  for v in true false; do
    timeout 100 $C/dllm $S --moe-persistent $v > $R/step-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-80
for n in 1 16 64; do
  for v in true false; do
    timeout 60 $C/dllm bench kernels --preset mini --device cuda --batch $n --prefix 1024 --steps 4 --moe-persistent $v > $R/k-b$n-$v.txt 2>&1
  done
done
grep -H "moe_\|sum of" $R/k-b*.txt | sed 's|.*/r/||' | cut -c1-120
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu cuda_graph_replay > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY" $R/memcheck-tests.txt
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu > $R/racecheck-tests.txt 2>&1; echo "racecheck rc=$?" | tee -a $R/racecheck-tests.txt
grep -h "RACECHECK SUMMARY" $R/racecheck-tests.txt
# Every kernel's own duration (ncu serializes them: no launch gaps), eager batch-1 steps, the
# weight init kernels left out.
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
timeout 120 $NCU --metrics gpu__time_duration.sum --csv -k regex:'^(?!init_normal)' --launch-count 1400 \
  $C/dllm bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 2 --batch 1 --disable-cuda-graph > $R/ncu-durations-b1.csv 2>&1  # summarised into ncu-durations-b1-step.txt
echo "ncu rc=$? lines $(wc -l < $R/ncu-durations-b1.csv)"
cd $OUT && tar czf r.tgz r
