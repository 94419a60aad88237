#!/usr/bin/env bash
# Session 15, final call: the tests on the final code, and the sampled step against the greedy one
# (same binary, interleaved runs), with sample_rows timed by bench kernels.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 240 $C/test_cuda_kernels --test-threads=1 --nocapture > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 120 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|sampler:" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked" $R/cuda-tests.txt | head -5
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,16,64"
for i in 1 2; do
  timeout 80 $C/dllm $S > $R/step-greedy-$i.txt 2>&1
  timeout 80 $C/dllm $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-$i.txt 2>&1
done
grep -H "^ *[0-9]" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-70
for n in 1 16 64; do
  timeout 80 $C/dllm bench kernels --preset mini --device cuda --batch $n --prefix 1024 --steps 4 --temperature 0.7 --top-p 0.9 > $R/k-sampled-b$n.txt 2>&1
  grep -H "sample_rows\|sum of" $R/k-sampled-b$n.txt | sed 's|.*/r/||'
done
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 sample_kernel mid_shape_ops_match_cpu cuda_graph_replay > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY" $R/memcheck-tests.txt
timeout 200 compute-sanitizer --tool racecheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/racecheck-sampler.txt 2>&1; echo "racecheck rc=$?" | tee -a $R/racecheck-sampler.txt
grep -h "RACECHECK SUMMARY" $R/racecheck-sampler.txt
cd $OUT && tar czf r.tgz r
