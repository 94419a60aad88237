#!/usr/bin/env bash
# Session 19, call 7: attention_combine's (m, l) by a max and a sum over the warp again (the
# one-pass merge by shuffles, two exps a round, measured slower at batch 16 and 1k batch 1 than
# the combine before it); the attention tests, graph replay, memcheck; the combine's kernel rows.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
M="--preset mini --device cuda --block 32"
timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch 1 --steps 4 > $R/k-1k-b1.txt 2>&1
timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch 16 --steps 4 > $R/k-1k-b16.txt 2>&1
timeout 60 $C/dllm bench kernels $M --prefix 32736 --batch 1 --steps 4 > $R/k-32k-b1.txt 2>&1
timeout 60 $C/dllm bench kernels $M --prefix 32736 --batch 8 --steps 4 > $R/k-32k-b8.txt 2>&1
grep -H "attention\|sum of" $R/k-*.txt | sed 's|.*/r/||'
for i in 1 2; do
  timeout 80 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,16,64,128 > $R/step-1k-$i.txt 2>&1
  timeout 80 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1,8 > $R/step-32k-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 attention_variants cuda_graph_replay > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck-tests.txt
cd $OUT && tar czf r.tgz r
