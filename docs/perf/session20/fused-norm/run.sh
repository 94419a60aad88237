#!/usr/bin/env bash
# Session 20, call 1: moe_combine fused into the next layer's input norm (add_moe_rms_norm).
# Tests (the whole CUDA suite, the fixtures, memcheck of the new test and graph replay), then the
# rule against --fused-moe-norm false, one binary, interleaved; bench kernels rows; ncu durations
# of one eager batch-1 step (every kernel's own time, for what to take next).
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
grep -h "into the next norm" $R/cuda-tests.txt | sort -t' ' -k1,1 | awk '{print $NF}' | sort -g | tail -1 | sed 's/^/largest next-norm error: /'
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  for f in true false; do
    timeout 80 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,16,64,128 --fused-moe-norm $f > $R/step-1k-$f-$i.txt 2>&1
    timeout 40 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1 --fused-moe-norm $f > $R/step-32k-$f-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
for f in true false; do
  timeout 90 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 --fused-moe-norm $f > $R/prefill-$f.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-110
for b in 1 64; do
  timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch $b --steps 4 > $R/k-b$b.txt 2>&1
  timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch $b --steps 4 --fused-moe-norm false > $R/k-b$b-false.txt 2>&1
done
grep -H "norm\|combine\|sum of" $R/k-*.txt | sed 's|.*/r/||'
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 moe_norm_both_ways cuda_graph_replay > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck-tests.txt
# Every kernel's own duration (ncu serializes them: no launch gaps), eager batch-1 steps, the
# weight init kernels left out.
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
timeout 100 $NCU --metrics gpu__time_duration.sum --csv -k regex:'^(?!init_normal)' --launch-count 1400 \
  $C/dllm bench step $M --prefix 1024 --steps 2 --batch 1 --disable-cuda-graph > $R/ncu-durations-b1.csv 2>&1
echo "ncu rc=$? lines $(wc -l < $R/ncu-durations-b1.csv)"
cd $OUT && tar czf r.tgz r
