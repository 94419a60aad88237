#!/usr/bin/env bash
# Session 35, call 3: 644b1aa's build (the residual GEMMs for the attention out and dense MLP
# down, QKV in bf16). Tests, fixtures, memcheck of the mid-shape and wide-heads tests; the lines
# (steps at 1k and 32k, sampled against greedy, prefills, bench generate), the 4,096-token prefill
# interleaved with `--residual-gemm false --qkv-bf16 false` (the code before); last the PyTorch
# baseline (tools/baseline_torch.py --variants triton --mask-frac 0) and our steps against it.
# r.tgz is rewritten after each part, so a part cut short by the time limit loses only itself.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 150 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
for t in mid_shape_ops_match_cpu wide_heads_ops_match_cpu; do
  timeout 100 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 $t > $R/memcheck-$t.txt 2>&1; echo "memcheck $t rc=$?" | tee -a $R/memcheck-$t.txt
  grep -h "ERROR SUMMARY" $R/memcheck-$t.txt
done
pack
M="--preset mini --device cuda --block 32"
OLD="--residual-gemm false --qkv-bf16 false"
for i in 1 2; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16,64,128 > $R/step-$i.txt 2>&1
  timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1,8 > $R/step-32k-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 --temperature 0.7 --top-p 0.9 > $R/sampled-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 > $R/greedy-$i.txt 2>&1
done
for i in 1 2 3 4; do
  timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-$i.txt 2>&1
  timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 $OLD > $R/prefill-old-$i.txt 2>&1
done
timeout 120 $C/dllm bench prefill $M --prompt-len 4096,32736 --batch 8,1 > $R/prefill-long.txt 2>&1
for i in 1 2; do
  timeout 60 $C/dllm bench generate $M --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic\|tokens/s" $R/*.txt | sed 's|.*/r/||' | cut -c1-120
pack
timeout 240 python3 tools/baseline_torch.py --preset mini --batch 1,4,16,64,128 --prefix 1024 --block 32 \
    --warmup 10 --iters 50 --variants triton --mask-frac 0 --json "$R/baseline-mini-mf0.json" > "$R/baseline-mini-mf0.log" 2>&1
echo "baseline rc=$?"; tail -n 6 "$R/baseline-mini-mf0.log" | cut -c1-60
B=$([ -s "$R/baseline-mini-mf0.json" ] && echo "--baseline $R/baseline-mini-mf0.json")
timeout 90 $C/dllm bench step --preset mini --device cuda --batch 1,4,16,64,128 --prefix 1024 --block 32 --steps 16 \
    --tokens random $B --json "$R/step-mini.json" > "$R/step-mini.txt" 2>&1
grep "^ *[0-9]" $R/step-mini.txt | cut -c1-150
grep -l "rror\|panic" $R/*.txt
pack
