#!/usr/bin/env bash
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 120 $C/test_cuda_kernels --test-threads=1 attention > $R/tests-att.txt 2>&1; echo "rc=$?" >> $R/tests-att.txt
tail -3 $R/tests-att.txt
if grep -q "rc=0" $R/tests-att.txt; then
K="$C/dllm bench kernels --preset mini --device cuda --block 32 --steps 4"
$K --batch 1 --prefix 32736 > $R/k-long-b1-auto.txt 2>&1
$K --batch 1 --prefix 32736 --att-deep false > $R/k-long-b1-off.txt 2>&1
$K --batch 8 --prefix 32736 > $R/k-long-b8-auto.txt 2>&1
$K --batch 64 --prefix 1024 > $R/k-b64-auto.txt 2>&1
$K --batch 64 --prefix 1024 --att-deep true --att-ctas-per-sm 1 > $R/k-b64-deep1.txt 2>&1
$K --batch 8 --prefix 32736 --att-deep true --att-ctas-per-sm 1 > $R/k-long-b8-deep1.txt 2>&1
$K --batch 16 --prefix 1024 > $R/k-b16-auto.txt 2>&1
$K --batch 16 --prefix 1024 --att-deep false > $R/k-b16-off.txt 2>&1
$K --batch 1 --prefix 1024 > $R/k-b1-auto.txt 2>&1
$K --batch 1 --prefix 1024 --att-deep false > $R/k-b1-off.txt 2>&1
grep -H "block_attention\|attention_combine" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-90
P="$C/dllm bench prefill --preset mini --device cuda --prompt-len 4096,32736 --batch 1"
$P > $R/prefill-auto.txt 2>&1
$P --att-deep true > $R/prefill-deep.txt 2>&1
grep -H "^ *[0-9]" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-120
B="$C/dllm bench step --preset mini --device cuda --block 32"
$B --batch 1,8 --prefix 32736 --steps 4 > $R/long-auto.txt 2>&1
$B --batch 1,8 --prefix 32736 --steps 4 --att-deep false > $R/long-off.txt 2>&1
$B --batch 8 --prefix 32736 --steps 4 --att-deep true --att-ctas-per-sm 1 > $R/long-deep1.txt 2>&1
$B --batch 1,4,16,64 --prefix 1024 --steps 8 > $R/step-auto.txt 2>&1
$B --batch 1,4,16,64 --prefix 1024 --steps 8 --att-deep false > $R/step-off.txt 2>&1
$B --batch 16 --prefix 8192 --steps 4 > $R/mid-auto.txt 2>&1
$B --batch 16 --prefix 8192 --steps 4 --att-deep true --att-ctas-per-sm 1 > $R/mid-deep1.txt 2>&1
grep -H "^ *[0-9]" $R/long-*.txt $R/step-*.txt $R/mid-*.txt | sed 's|.*/r/||' | cut -c1-100
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 attention_variants > $R/racecheck.txt 2>&1; echo "racecheck rc=$?" | tee -a $R/racecheck.txt
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 attention_variants > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
fi
cd $OUT && tar czf r.tgz r
