#!/usr/bin/env bash
# Session 20, call 4: the attention's split partials as bf16 O / l (this build, .carry/dllm)
# against f32 unnormalised ones (.carry/dllm-base: the build before, behaviour as d4387a7), in
# the same call, interleaved. Tests first (the CUDA suite, the fixtures, memcheck of the
# attention variants and graph replay).
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
grep -h "^attention" $R/cuda-tests.txt | awk '{print $NF}' | sort -g | tail -1 | sed 's/^/largest attention error: /'
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  for b in dllm dllm-base; do
    timeout 60 $C/$b bench step $M --prefix 32736 --steps 4 --batch 1,8 > $R/step-32k-$b-$i.txt 2>&1
    timeout 80 $C/$b bench step $M --prefix 1024 --steps 8 --batch 1,16,64 > $R/step-1k-$b-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
for b in dllm dllm-base; do
  timeout 60 $C/$b bench kernels $M --prefix 32736 --batch 1 --steps 4 > $R/k-32k-b1-$b.txt 2>&1
  timeout 60 $C/$b bench kernels $M --prefix 1024 --batch 1 --steps 4 > $R/k-1k-b1-$b.txt 2>&1
  timeout 100 $C/$b bench prefill $M --prompt-len 4096,32736 --batch 1 > $R/prefill-$b.txt 2>&1
done
grep -H "attention\|sum of" $R/k-*.txt | sed 's|.*/r/||'
grep -H "^ *[0-9]\|rror" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 attention_variants cuda_graph_replay > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck-tests.txt
cd $OUT && tar czf r.tgz r
