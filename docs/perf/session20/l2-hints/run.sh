#!/usr/bin/env bash
# Session 20, call 2: qk_norm_rope_store hints its layer's output projection and router weights
# into L2 (read after the attention). Tests (the CUDA suite, the fixtures), then the rule
# against --l2-hints false, one binary, interleaved; bench kernels rows at batch 1 and 16.
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
for i in 1 2; do
  for f in true false; do
    timeout 80 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,16,64 --l2-hints $f > $R/step-1k-$f-$i.txt 2>&1
    timeout 40 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1 --l2-hints $f > $R/step-32k-$f-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
for f in true false; do
  timeout 90 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 --l2-hints $f > $R/prefill-$f.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-110
for b in 1 16; do
  for f in true false; do
    timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch $b --steps 4 --l2-hints $f > $R/k-b$b-$f.txt 2>&1
  done
done
grep -H "route\|router\|attention out\|rope\|qkv\|sum of" $R/k-*.txt | sed 's|.*/r/||'
cd $OUT && tar czf r.tgz r
