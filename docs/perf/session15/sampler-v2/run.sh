#!/usr/bin/env bash
# Session 15, call 3: the second pass reading exact weights only at and above the guided bin, the
# first pass's guide still float atomics. (dllm_base was not carried: its rows are missing.)
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 120 $C/test_cuda_kernels --test-threads=1 --nocapture sample_kernel > $R/sampler-test.txt 2>&1; echo "rc=$?" >> $R/sampler-test.txt
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,16,64"
timeout 80 $C/dllm $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-new.txt 2>&1
timeout 80 $C/dllm $S > $R/step-greedy-new.txt 2>&1
timeout 80 $C/dllm $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-new2.txt 2>&1
timeout 240 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 100 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/memcheck-sampler.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-sampler.txt
timeout 200 compute-sanitizer --tool racecheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/racecheck-sampler.txt 2>&1; echo "racecheck rc=$?" | tee -a $R/racecheck-sampler.txt
cd $OUT && tar czf r.tgz r
