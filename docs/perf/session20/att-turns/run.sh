#!/usr/bin/env bash
# Session 20, call 3: block_attention_deep's consumers taking turns at issuing (--att-turns),
# measured where the attention is compute-bound (prefill) and on the steps; the attention
# variants test both ways, memcheck and racecheck of it.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 120 $C/test_cuda_kernels --test-threads=1 attention > $R/tests-att.txt 2>&1; echo "rc=$?" >> $R/tests-att.txt
grep -h "test result\|^rc=" $R/tests-att.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/tests-att.txt | head -20
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  for f in true false; do
    timeout 100 $C/dllm bench prefill $M --prompt-len 4096,32736 --batch 1 --att-turns $f > $R/prefill-$f-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-110
for f in true false; do
  timeout 100 $C/dllm bench prefill $M --prompt-len 4096 --batch 8 --att-turns $f > $R/prefill-4096x8-$f.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/prefill-4096x8-*.txt | sed 's|.*/r/||' | cut -c1-110
for i in 1 2; do
  for f in true false; do
    timeout 80 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,16,64,128 --att-turns $f > $R/step-1k-$f-$i.txt 2>&1
    timeout 60 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1,8 --att-turns $f > $R/step-32k-$f-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
for f in true false; do
  timeout 90 $NCU --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel -k regex:block_attention_deep \
    $C/dllm bench prefill $M --prompt-len 4096 --batch 2 --att-turns $f --mem-fraction-static 0.1 > $R/ncu-prefill-att-$f.txt 2>&1
  grep -A4 "block_attention_deep" $R/ncu-prefill-att-$f.txt | grep -i "average\|gpu__time" | head -2 | sed "s/^/turns $f: /"
done
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 attention_variants > $R/racecheck.txt 2>&1; echo "racecheck rc=$?" | tee -a $R/racecheck.txt
grep -h "RACECHECK SUMMARY\|ERROR SUMMARY\|test result" $R/racecheck.txt
cd $OUT && tar czf r.tgz r
