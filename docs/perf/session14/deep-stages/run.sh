#!/usr/bin/env bash
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 200 $C/test_cuda_kernels --test-threads=1 attention mid_shape_ops_match_cpu cuda_graph_replay > $R/tests.txt 2>&1; echo "tests rc=$?" >> $R/tests.txt
tail -5 $R/tests.txt
B="$C/dllm bench step --preset mini --device cuda --block 32"
for i in 1 2; do
  $B --batch 1,4,16,64 --prefix 1024 --steps 8 > $R/step-auto-$i.txt 2>&1
  $B --batch 1,4,16,64 --prefix 1024 --steps 8 --att-deep false > $R/step-off-$i.txt 2>&1
done
$B --batch 1,8 --prefix 32736 --steps 4 > $R/long-auto.txt 2>&1
$B --batch 1 --prefix 32736 --steps 4 --att-deep false > $R/long-off.txt 2>&1
K="$C/dllm bench kernels --preset mini --device cuda --block 32 --steps 4"
$K --batch 1 --prefix 32736 > $R/k-long-b1-auto.txt 2>&1
$K --batch 1 --prefix 32736 --att-deep false > $R/k-long-b1-off.txt 2>&1
$K --batch 16 --prefix 1024 > $R/k-b16-auto.txt 2>&1
$K --batch 16 --prefix 1024 --att-deep false > $R/k-b16-off.txt 2>&1
grep -h "^ *[0-9]" $R/step-*.txt $R/long-*.txt
grep -h "block_attention\|attention_combine\|sum of" $R/k-*.txt
cd $OUT && tar czf r.tgz r
