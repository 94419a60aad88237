#!/usr/bin/env bash
# Session 30, call 6: the final code (c8b530d: moe_route up to 256 rows, the shared expert among
# up to 8 items, gate_up after moe_permute). Its tests, then the lines it moves (steps at 1k up to
# batch 32 and at 32k, sampled against greedy) against dllm_base (17412cf's build), interleaved;
# and batch 32 with the shared expert among its 16 items (`--shared-expert-items 16`).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
gunzip -c $C/dllm_base.gz > /tmp/dllm_base && chmod +x /tmp/dllm_base
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
M="--preset mini --device cuda --block 32"
S="bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16,32"
for i in 1 2 3; do
  timeout 60 $C/dllm $S > $R/step-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_base $S > $R/step-base-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 32 --shared-expert-items 16 > $R/b32-items16-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt $R/b32-*.txt | sed 's|.*/r/||' | cut -c1-110
for i in 1 2; do
  timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1,8 > $R/step-32k-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 --temperature 0.7 --top-p 0.9 > $R/sampled-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 > $R/greedy-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/step-32k-*.txt $R/sampled-*.txt $R/greedy-*.txt | sed 's|.*/r/||' | cut -c1-110
cd $OUT && tar czf r.tgz r
