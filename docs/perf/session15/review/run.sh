#!/usr/bin/env bash
# Session 15, review: id_select's and nucleus_draw's segment passes through one helper
# (warp_segment_sums), against the binary before (dllm_base, 368a7a0's code), same call.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
timeout 120 $C/test_cuda_kernels --test-threads=1 --nocapture sample_kernel > $R/sampler-test.txt 2>&1; echo "rc=$?" >> $R/sampler-test.txt
grep -h "sampler:\|test result\|^rc=\|panicked" $R/sampler-test.txt | head
for b in dllm dllm_base; do for n in 16 64; do
  timeout 60 $C/$b bench kernels --preset mini --device cuda --batch $n --prefix 1024 --steps 4 --temperature 0.7 --top-p 0.9 > $R/k-$b-b$n.txt 2>&1
  timeout 60 $C/$b bench kernels --preset mini --device cuda --batch $n --prefix 1024 --steps 4 --temperature 0.7 --top-p 0.9 --top-k 50 > $R/k-topk-$b-b$n.txt 2>&1
  grep -H "sample_rows" $R/k-$b-b$n.txt $R/k-topk-$b-b$n.txt | sed 's|.*/r/||'
done; done
timeout 100 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/memcheck-sampler.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-sampler.txt
grep -h "ERROR SUMMARY" $R/memcheck-sampler.txt
cd $OUT && tar czf r.tgz r
