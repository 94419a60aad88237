#!/usr/bin/env bash
# Session 16, call 5 (final code): tests and memcheck; the gate_up streams' L2 hints by their rule
# (on at flash's k, off at mini's) against --stream-prefetch 0, same binary, interleaved; and the
# mini step where it stands (1k and 32k prefixes, greedy and sampled).
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 100 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked" $R/cuda-tests.txt | head -5
F="bench step --preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16"
M="bench step --preset mini --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4"
for i in 1 2; do
  timeout 120 $C/dllm $F > $R/step-flash-fp8-rule-$i.txt 2>&1
  timeout 120 $C/dllm $F --stream-prefetch 0 > $R/step-flash-fp8-off-$i.txt 2>&1
  timeout 90 $C/dllm $M > $R/step-mini-fp8-rule-$i.txt 2>&1
  timeout 90 $C/dllm $M --stream-prefetch 0 > $R/step-mini-fp8-off-$i.txt 2>&1
done
grep -H "^ *[0-9]" $R/step-*fp8*.txt | sed 's|.*/r/||' | cut -c1-100
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4,16,64,128"
for i in 1 2; do
  timeout 100 $C/dllm $S > $R/step-mini-$i.txt 2>&1
done
timeout 90 $C/dllm bench step --preset mini --device cuda --block 32 --prefix 32736 --steps 4 --batch 1,8 > $R/step-mini-long.txt 2>&1
timeout 90 $C/dllm bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,16,64 --temperature 0.7 --top-p 0.9 > $R/step-mini-sampled.txt 2>&1
grep -H "^ *[0-9]" $R/step-mini-[12ls]*.txt | sed 's|.*/r/||' | cut -c1-100
timeout 240 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu mid_shape_fp8_ops_match_cpu cuda_graph_replay > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY" $R/memcheck-tests.txt
cd $OUT && tar czf r.tgz r
