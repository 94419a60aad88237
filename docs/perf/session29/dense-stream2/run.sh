#!/usr/bin/env bash
# Session 29, call 3: dense_stream's second form (copies without a division a piece, four CTAs
# an SM, the sums over the weight tile): ncu of layer 0's launches, then `--dense-stream` on and
# off interleaved (one binary), then the CUDA suite, the fixtures, memcheck of the stream's test.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
NCU="ncu --clock-control none --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats --metrics dram__bytes_read.sum,gpu__time_duration.sum,sm__cycles_active.avg"
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 2 --disable-cuda-graph --mem-fraction-static 0.05 --batch 1 --dense-stream"
timeout 200 $NCU -k regex:'^dense_' --launch-count 2 $C/dllm $S > $R/ncu-dense.txt 2>&1; echo "ncu rc=$?"
grep -E "^  dense_|Duration|DRAM Throughput|Elapsed Cycles|SM Active Cycles|Max Active Clusters|Achieved Active Warps|Warp Cycles Per Issued|Issued Warp|ERROR" $R/ncu-dense.txt | head -40
M="--preset mini --device cuda --block 32"
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --batch 1,4 --steps 8 --dense-stream > $R/step-1k-on-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --batch 1,4 --steps 8 > $R/step-1k-off-$i.txt 2>&1
done
for i in 1 2; do
  timeout 90 $C/dllm bench step $M --prefix 32736 --batch 1 --steps 8 --dense-stream > $R/step-32k-on-$i.txt 2>&1
  timeout 90 $C/dllm bench step $M --prefix 32736 --batch 1 --steps 8 > $R/step-32k-off-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch 1 --steps 4 --dense-stream > $R/k-b1-on.txt 2>&1
grep -h "stream\|cublas\|sum of" $R/k-b1-on.txt
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1
grep -h "test result\|FAILED\|panicked" $R/cuda-tests.txt | head
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; grep -h "test result" $R/fixtures.txt
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels dense_stream_long_k_matches_cpu > $R/memcheck.txt 2>&1
echo "memcheck rc=$?"; grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
cd $OUT && tar czf r.tgz r
