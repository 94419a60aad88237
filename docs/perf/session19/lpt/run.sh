#!/usr/bin/env bash
# Session 19, call 8: the query tiles longest first (the host orders the pack's tiles by their
# keys, most first). Attention, graph-replay and mid-shape tests, fixtures; prefill; ncu of the
# prefill attention (against refactor-prefill/'s 354.9 us mean at 4,096 x 8); steps.
set -uo pipefail
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13* | head -1)
export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):${LD_LIBRARY_PATH:-}
export DLLM_CACHE_DIR=/tmp/dllm-cache
R=$OUT/r; mkdir -p $R; C=.carry
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $R/device.txt
timeout 150 $C/test_cuda_kernels --test-threads=1 attention_variants cuda_graph_replay mid_shape_ops_match_cpu tiny_ops > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 150 $C/dllm bench prefill --preset mini --device cuda --prompt-len 4096,32736 --batch 1,8 > $R/prefill.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/prefill.txt | sed 's|.*/r/||'
timeout 120 ncu --clock-control none -k regex:block_attention_deep --metrics gpu__time_duration.sum --print-summary per-kernel $C/dllm bench prefill --preset mini --device cuda --prompt-len 4096 --batch 8 --mem-fraction-static 0.1 > $R/ncu-prefill-att.txt 2>&1
grep -E "^  [a-z_]|gpu__time_duration|rror" $R/ncu-prefill-att.txt | head -12
M="--preset mini --device cuda --block 32"
timeout 80 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,16,64 > $R/step-1k.txt 2>&1
timeout 80 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1,8 > $R/step-32k.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
cd $OUT && tar czf r.tgz r
