#!/usr/bin/env bash
# Session 23, call 2: block_attention_deep with 6 stages (--att-deep-more-stages: 4 chunks in
# flight where 5 stages keep 3) against 5; what the KV pool's position-major pages cost a
# head's reads (kv_layout_read.py, Triton); ncu of a batch-1 step's deep attention at a 32k
# prefix (the step's launch, not the prefill's), both stage counts.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 150 $C/test_cuda_kernels --test-threads=1 attention > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 60 python3 docs/perf/session23/att-stages/kv_layout_read.py > $R/kv-layout-read.txt 2>&1; tail -4 $R/kv-layout-read.txt
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  for v in true false; do
    timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,16,64 --att-deep-more-stages $v > $R/more-1k-$v-$i.txt 2>&1
    timeout 60 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1,8 --att-deep-more-stages $v > $R/more-32k-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/more-*.txt | sed 's|.*/r/||' | cut -c1-120
for v in true false; do
  timeout 100 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 --att-deep-more-stages $v > $R/prefill-4096-$v.txt 2>&1
  timeout 40 $C/dllm bench kernels $M --prefix 32736 --batch 1 --steps 4 --att-deep-more-stages $v > $R/k-32k-b1-$v.txt 2>&1
  timeout 40 $C/dllm bench kernels $M --prefix 1024 --batch 64 --steps 4 --att-deep-more-stages $v > $R/k-b64-$v.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-120
grep -H "block_attention\|attention_combine\|sum of" $R/k-*.txt | sed 's|.*/r/||'
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
SEC="--section SpeedOfLight --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --section Occupancy"
for v in false true; do
  timeout 120 $NCU $SEC -k regex:block_attention_deep --launch-skip 150 --launch-count 1 \
    $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1 --att-deep-more-stages $v --disable-cuda-graph --mem-fraction-static 0.3 > $R/ncu-att-32k-b1-$v.txt 2>&1
  echo "ncu $v rc=$? lines $(wc -l < $R/ncu-att-32k-b1-$v.txt)"
  grep -E "Grid Size|Duration|DRAM Throughput|L2 Hit|Compute \(SM\) Throughput|Issue Slots Busy|Eligible Warps|No Eligible|Stall" $R/ncu-att-32k-b1-$v.txt | head -16
done
cd $OUT && tar czf r.tgz r
