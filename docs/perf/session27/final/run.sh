#!/usr/bin/env bash
# Session 27, call 4: e3c3c16's build (call 3's dllm_seg with its own tests): the CUDA suite, the
# fixtures and memcheck of the sampler's test on the code that landed; sampled (temperature 0.7,
# top-p 0.9) against greedy steps, interleaved; then the PyTorch baseline (tools/baseline_torch.py
# --variants triton --mask-frac 0, its fastest variant at every batch in session 14) at the
# batches session 26 had no device time for (4, 16, 128), and our step at them with it attached.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 sample_kernel > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,16,64"
for i in 1 2; do
  timeout 60 $C/dllm $S > $R/step-greedy-$i.txt 2>&1
  timeout 60 $C/dllm $S --temperature 0.7 --top-p 0.9 > $R/step-sampled-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 300 python3 tools/baseline_torch.py --preset mini --batch 4,16,128 --prefix 1024 --block 32 \
    --warmup 10 --iters 50 --variants triton --mask-frac 0 --json "$R/baseline-mini-mf0.json" > "$R/baseline-mini-mf0.log" 2>&1
echo "baseline rc=$?"; tail -n 7 "$R/baseline-mini-mf0.log"
B=$([ -s "$R/baseline-mini-mf0.json" ] && echo "--baseline $R/baseline-mini-mf0.json")
timeout 90 $C/dllm bench step --preset mini --device cuda --batch 4,16,128 --prefix 1024 --block 32 --steps 16 \
    --tokens random $B --json "$R/step-mini.json" > "$R/step-mini.txt" 2>&1
cat "$R/step-mini.txt" | cut -c1-150
cd $OUT && tar czf r.tgz r
