#!/usr/bin/env bash
# Session 15: the top-k select's histograms as integer counts (native shared-memory atomics)
# against d0ba736's sampler (dllm_base: the same tree with d0ba736's csrc/sampler.cu), same call.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 240 $C/test_cuda_kernels --test-threads=1 --nocapture > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
grep -h "test result\|^rc=\|sampler:" $R/cuda-tests.txt; grep -h "FAILED\|panicked" $R/cuda-tests.txt | head -5
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,16,64"
K="--temperature 0.7 --top-p 0.9 --top-k 50"
for i in 1 2; do
  timeout 80 $C/dllm $S > $R/step-greedy-$i.txt 2>&1
  timeout 80 $C/dllm $S $K > $R/step-topk-new-$i.txt 2>&1
  timeout 80 $C/dllm_base $S $K > $R/step-topk-base-$i.txt 2>&1
  timeout 80 $C/dllm $S --temperature 0.7 --top-p 0.9 > $R/step-topp-new-$i.txt 2>&1
done
grep -H "^ *[0-9]" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-70
for b in dllm dllm_base; do
  timeout 80 $C/$b bench kernels --preset mini --device cuda --batch 64 --prefix 1024 --steps 4 $K > $R/k-topk-$b-b64.txt 2>&1
  grep -H "sample_rows" $R/k-topk-$b-b64.txt | sed 's|.*/r/||'
done
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/memcheck-sampler.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-sampler.txt
grep -h "ERROR SUMMARY" $R/memcheck-sampler.txt
timeout 200 compute-sanitizer --tool racecheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/racecheck-sampler.txt 2>&1; echo "racecheck rc=$?" | tee -a $R/racecheck-sampler.txt
grep -h "RACECHECK SUMMARY" $R/racecheck-sampler.txt
cd $OUT && tar czf r.tgz r
