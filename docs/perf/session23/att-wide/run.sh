#!/usr/bin/env bash
# Session 23, call 1: block_attention_deep_wide (two 64-key chunks a consumer step, registers
# moved to the consumers by setmaxnreg; --att-wide) against block_attention_deep, and the
# sampler's guide histogram by warp sums (--sample-warp-sums), each one binary's two settings,
# interleaved. Tests first (the CUDA suite runs both attention forms and both sampler forms).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 attention_variants sample_kernel > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  for v in true false; do
    timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,16,64 --att-wide $v > $R/wide-1k-$v-$i.txt 2>&1
    timeout 60 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1,8 --att-wide $v > $R/wide-32k-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/wide-*.txt | sed 's|.*/r/||' | cut -c1-120
for v in true false; do
  timeout 100 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 --att-wide $v > $R/prefill-4096-$v.txt 2>&1
  timeout 60 $C/dllm bench prefill $M --prompt-len 32736 --batch 1 --att-wide $v > $R/prefill-32736-$v.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-120
for v in true false; do
  timeout 40 $C/dllm bench kernels $M --prefix 32736 --batch 1 --steps 4 --att-wide $v > $R/k-32k-b1-$v.txt 2>&1
  timeout 40 $C/dllm bench kernels $M --prefix 1024 --batch 64 --steps 4 --att-wide $v > $R/k-b64-$v.txt 2>&1
done
grep -H "block_attention\|attention_combine\|sum of" $R/k-*.txt | sed 's|.*/r/||'
timeout 60 python3 docs/perf/session23/att-wide/strided_read.py > $R/strided-read.txt 2>&1; cat $R/strided-read.txt | tail -3
S="bench step $M --prefix 1024 --steps 8 --batch 16,64"
for i in 1 2; do
  for v in true false; do
    timeout 60 $C/dllm $S --temperature 0.7 --top-p 0.9 --sample-warp-sums $v > $R/sampled-$v-$i.txt 2>&1
  done
  timeout 60 $C/dllm $S > $R/greedy-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/sampled-*.txt $R/greedy-*.txt | sed 's|.*/r/||' | cut -c1-110
for v in true false; do
  timeout 40 $C/dllm bench kernels $M --prefix 1024 --batch 64 --steps 4 --temperature 0.7 --top-p 0.9 --sample-warp-sums $v > $R/k-sampled-b64-$v.txt 2>&1
done
grep -H "sample_rows\|sum of" $R/k-sampled-*.txt | sed 's|.*/r/||'
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
SEC="--section SpeedOfLight --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis --section Occupancy"
for v in true false; do
  timeout 120 $NCU $SEC -k regex:block_attention_deep --launch-skip 20 --launch-count 1 \
    $C/dllm bench step $M --prefix 32736 --steps 2 --batch 1 --att-wide $v --disable-cuda-graph --mem-fraction-static 0.3 > $R/ncu-att-32k-b1-$v.txt 2>&1
  echo "ncu $v rc=$? lines $(wc -l < $R/ncu-att-32k-b1-$v.txt)"
  grep -E "Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Issue Slots Busy|Eligible Warps|No Eligible" $R/ncu-att-32k-b1-$v.txt | head -12
done
cd $OUT && tar czf r.tgz r
