#!/usr/bin/env bash
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
timeout 60 $C/test_cuda_kernels --test-threads=1 attention mid_shape_ops_match_cpu cuda_graph_replay wide_heads > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 30 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
for b in dllm_base dllm; do
  for k in "--batch 64 --prefix 1024" "--batch 8 --prefix 32736" "--batch 16 --prefix 1024" "--batch 1 --prefix 32736"; do
    $C/$b bench kernels --preset mini --device cuda --block 32 --steps 4 $k > "$R/k-$b-$(echo $k | tr -d ' -')".txt 2>&1
  done
done
grep -H "block_attention" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-80
timeout 60 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 attention_variants > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
cd $OUT && tar czf r.tgz r
