#!/usr/bin/env bash
# Session 23, call 3: block_attention_deep_ahead (--att-s-ahead: S_(ch+1) issued before chunk
# ch's softmax into a second S buffer, registers moved to the consumers by setmaxnreg) against
# block_attention_deep, one binary's two settings interleaved; its tests and memcheck first;
# ncu of a batch-1 step's attention launch at a 32k prefix both ways.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 150 $C/test_cuda_kernels --test-threads=1 attention > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 attention_variants > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  for v in true false; do
    timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,16,64,128 --att-s-ahead $v > $R/ahead-1k-$v-$i.txt 2>&1
    timeout 60 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1,8 --att-s-ahead $v > $R/ahead-32k-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/ahead-*.txt | sed 's|.*/r/||' | cut -c1-120
for v in true false; do
  timeout 100 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 --att-s-ahead $v > $R/prefill-4096-$v.txt 2>&1
  timeout 60 $C/dllm bench prefill $M --prompt-len 32736 --batch 1 --att-s-ahead $v > $R/prefill-32736-$v.txt 2>&1
  timeout 40 $C/dllm bench kernels $M --prefix 32736 --batch 1 --steps 4 --att-s-ahead $v > $R/k-32k-b1-$v.txt 2>&1
  timeout 40 $C/dllm bench kernels $M --prefix 1024 --batch 64 --steps 4 --att-s-ahead $v > $R/k-b64-$v.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-120
grep -H "block_attention\|attention_combine\|sum of" $R/k-*.txt | sed 's|.*/r/||'
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
SEC="--section SpeedOfLight --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis --section Occupancy"
for v in true false; do
  timeout 120 $NCU $SEC -k regex:block_attention_deep --launch-skip 150 --launch-count 1 \
    $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1 --att-s-ahead $v --disable-cuda-graph --mem-fraction-static 0.3 > $R/ncu-att-32k-b1-$v.txt 2>&1
  echo "ncu $v rc=$? lines $(wc -l < $R/ncu-att-32k-b1-$v.txt)"
  grep -E "Grid Size|Duration|DRAM Throughput|Compute \(SM\) Throughput|Issue Slots Busy|Eligible Warps|No Eligible" $R/ncu-att-32k-b1-$v.txt | head -8
done
cd $OUT && tar czf r.tgz r
