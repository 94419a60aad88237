#!/usr/bin/env bash
# Session 19, call 2: block_attention_deep's K/V by TMA (--att-tma true|false, one binary) and
# attention_combine with several warps a row. Tests first (the attention variants over page
# sizes 8/32/128/12 with a NaN-poisoned pool, then the whole suite), then kernel tables and steps.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
L="--preset mini --device cuda --block 32 --prefix 32736"
for t in true false; do
  timeout 60 $C/dllm bench kernels $L --batch 1 --steps 4 --att-tma $t > $R/k-long-b1-tma-$t.txt 2>&1
  timeout 80 $C/dllm bench kernels $L --batch 8 --steps 4 --att-deep true --att-tma $t > $R/k-long-b8-deep-tma-$t.txt 2>&1
done
timeout 80 $C/dllm bench kernels $L --batch 8 --steps 4 > $R/k-long-b8-rule.txt 2>&1
grep -H "attention\|sum of" $R/k-long-*.txt | sed 's|.*/r/||'
for i in 1 2; do
  for t in true false; do
    timeout 80 $C/dllm bench step $L --batch 1,8 --steps 4 --att-tma $t > $R/step-long-tma-$t-$i.txt 2>&1
    timeout 80 $C/dllm bench step $L --batch 8 --steps 4 --att-deep true --att-tma $t > $R/step-long-b8-deep-tma-$t-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-long*.txt | sed 's|.*/r/||' | cut -c1-80
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16,64,128"
for t in true false; do timeout 80 $C/dllm $S --att-tma $t > $R/step-tma-$t.txt 2>&1; done
grep -H "^ *[0-9]\|rror" $R/step-tma-*.txt | sed 's|.*/r/||' | cut -c1-70
timeout 60 $C/dllm bench kernels --preset mini --device cuda --batch 1 --prefix 1024 --steps 4 > $R/k-b1.txt 2>&1
timeout 60 $C/dllm bench kernels --preset mini --device cuda --batch 16 --prefix 1024 --steps 4 > $R/k-b16.txt 2>&1
grep -H "attention\|sum of" $R/k-b*.txt | sed 's|.*/r/||'
NCU="ncu --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --metrics dram__bytes_read.sum,lts__t_bytes.sum,smsp__inst_executed.sum"
S="bench step $L --steps 2 --disable-cuda-graph --mem-fraction-static 0.1 --batch 1"
timeout 100 $NCU -k regex:block_attention_deep --launch-skip 20 --launch-count 1 $C/dllm $S > $R/ncu-deep-b1.txt 2>&1
timeout 100 $NCU -k regex:attention_combine --launch-skip 20 --launch-count 1 $C/dllm $S > $R/ncu-combine-b1.txt 2>&1
for f in $R/ncu-*.txt; do echo "== $f"; grep -E "\(.*\)x\(|Duration|DRAM Throughput|Memory Throughput|Eligible Warps|Warp Cycles Per Issued|smsp__inst_executed|rror" $f | head -12; done
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 attention_variants > $R/memcheck-att.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-att.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck-att.txt
cd $OUT && tar czf r.tgz r
