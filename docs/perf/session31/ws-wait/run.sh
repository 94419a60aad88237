#!/usr/bin/env bash
# Session 31, call 5: the warp-specialized expert tiles' consumers keep a k-step's wgmmas in
# flight (wait for the step before's, then free its stage) instead of draining every step. Those
# tiles take 128-row items: batch 64 and up and prefill. The tests (every item size, warp-
# specialized both ways, against the CPU), then against dllm_edges (509d10a's build), interleaved.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
gunzip -c $C/dllm_edges.gz > /tmp/dllm_edges && chmod +x /tmp/dllm_edges
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
M="--preset mini --device cuda --block 32"
for i in 1 2 3; do
  timeout 120 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-new-$i.txt 2>&1
  timeout 120 /tmp/dllm_edges bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-edges-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64,128 > $R/wide-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_edges bench step $M --prefix 1024 --steps 8 --batch 64,128 > $R/wide-edges-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/prefill-*.txt $R/wide-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 200 $C/dllm bench prefill $M --prompt-len 4096 --batch 8 > $R/prefill8-new.txt 2>&1
timeout 200 /tmp/dllm_edges bench prefill $M --prompt-len 4096 --batch 8 > $R/prefill8-edges.txt 2>&1
timeout 200 $C/dllm bench kernels $M --prefix 1024 --batch 128 --steps 4 > $R/k-b128-new.txt 2>&1
timeout 200 /tmp/dllm_edges bench kernels $M --prefix 1024 --batch 128 --steps 4 > $R/k-b128-edges.txt 2>&1
grep -H "^ *[0-9]\|rror\|panic" $R/prefill8-*.txt | sed 's|.*/r/||' | cut -c1-110
grep -H "_ws" $R/k-b128-*.txt | sed 's|.*/r/||'
cd $OUT && tar czf r.tgz r
