#!/usr/bin/env bash
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 240 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 120 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked" $R/cuda-tests.txt | head -5
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu cuda_graph_replay > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY" $R/memcheck-tests.txt
timeout 200 python3 tools/baseline_torch.py --preset mini --batch 1,4,16,64 --prefix 1024 --block 32 --warmup 10 --iters 50 --variants compile,triton,eager --mask-frac 0 --json $R/baseline-mini-mf0.json > $R/baseline-mini-mf0.log 2>&1
B="$C/dllm bench step --preset mini --device cuda --block 32"
$B --batch 1,4,16,64,128 --prefix 1024 --steps 8 --baseline $R/baseline-mini-mf0.json --json $R/step-mini-1.json > $R/step-mini-1.txt 2>&1
$B --batch 1,4,16,64,128 --prefix 1024 --steps 8 --baseline $R/baseline-mini-mf0.json --json $R/step-mini-2.json > $R/step-mini-2.txt 2>&1
$B --batch 1,8 --prefix 32736 --steps 4 > $R/step-long.txt 2>&1
grep -h "^ *[0-9]" $R/step-*.txt | cut -c1-150
$C/dllm bench prefill --preset mini --device cuda --prompt-len 4096,32736 --batch 1 > $R/prefill-mini.txt 2>&1
grep -h "^ *[0-9]" $R/prefill-mini.txt | cut -c1-120
$C/dllm bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate-mini-64.txt 2>&1
tail -4 $R/generate-mini-64.txt
cd $OUT && tar czf r.tgz r
