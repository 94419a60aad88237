#!/usr/bin/env bash
# Session 22, last call: what binds the sampler at batch 64 (sample_rows, temperature 0.7,
# top-p 0.9): ncu's stall reasons and hot spots of one launch. First the sampler's guide histogram by warp sums (--sample-warp-sums, this
# build's one change against 477a6bd) against one atomic a token: its test, memcheck, timings. The binary is 477a6bd plus
# the switch below (off by default).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 150 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/sampler-test.txt 2>&1; echo "rc=$?" >> $R/sampler-test.txt
grep -h "test result\|^rc=\|panicked" $R/sampler-test.txt
M0="--preset mini --device cuda --block 32"
for bt in 16 64; do
  for v in true false; do
    timeout 40 $C/dllm bench kernels $M0 --prefix 1024 --batch $bt --steps 4 --temperature 0.7 --top-p 0.9 --sample-warp-sums $v > $R/k-sampled-b$bt-$v.txt 2>&1
  done
done
grep -H "sample_rows" $R/k-sampled-*.txt | sed 's|.*/r/||'
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/memcheck-sampler.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-sampler.txt
grep -h "ERROR SUMMARY" $R/memcheck-sampler.txt
for i in 1; do
  for v in true false; do
    timeout 60 $C/dllm bench step $M0 --prefix 1024 --steps 8 --batch 16,64 --temperature 0.7 --top-p 0.9 --sample-warp-sums $v > $R/step-sampled-$v-$i.txt 2>&1
  done
  timeout 60 $C/dllm bench step $M0 --prefix 1024 --steps 8 --batch 16,64 > $R/step-greedy-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
SEC="--section SpeedOfLight --section WarpStateStats --section SchedulerStats --section InstructionStats --section Occupancy --section MemoryWorkloadAnalysis --section SourceCounters"
M="--preset mini --device cuda --block 32"
timeout 150 $NCU $SEC -k sample_rows --launch-skip 4 --launch-count 1 \
  $C/dllm bench step $M --prefix 1024 --steps 2 --batch 64 --temperature 0.7 --top-p 0.9 --disable-cuda-graph --mem-fraction-static 0.3 > $R/ncu-sample-rows-b64.txt 2>&1
echo "ncu rc=$? lines $(wc -l < $R/ncu-sample-rows-b64.txt)"
grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|Issue Slots Busy|Eligible Warps|Stall|Achieved Occupancy" $R/ncu-sample-rows-b64.txt | head -30
cd $OUT && tar czf r.tgz r
