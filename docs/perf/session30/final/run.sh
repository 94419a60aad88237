#!/usr/bin/env bash
# Session 30, call 3: the landed code (f15d46d: gate_up of the one-warpgroup tiles as moe_permute's
# programmatic dependent where no kernel runs beside, the layer's buffers allocated before its
# router and freed after it, add_moe_rms_norm's independent loads first). Its tests; the lines
# against dllm_base (17412cf's build); batch 16 with the shared expert among 8 items; and the
# memory-node probe: dllm_x (f15d46d + dirty.patch, not landed) with DLLM_X_DIRTY puts an
# allocation and a free (two graph nodes) before every plain launch of the main stream.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
gunzip -c $C/dllm_base.gz > /tmp/dllm_base && chmod +x /tmp/dllm_base
gunzip -c $C/dllm_x.gz > /tmp/dllm_x && chmod +x /tmp/dllm_x
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops cuda_graph > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
S="bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16"
for i in 1 2 3; do
  timeout 60 $C/dllm $S > $R/step-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_base $S > $R/step-base-$i.txt 2>&1
  DLLM_X_DIRTY=1 timeout 60 /tmp/dllm_x $S > $R/step-dirty-$i.txt 2>&1
  timeout 60 $C/dllm $S --shared-expert-items 8 > $R/step-items8-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-110
for i in 1 2; do
  timeout 90 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64,128 > $R/wide-new-$i.txt 2>&1
  timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1,8 > $R/step-32k-$i.txt 2>&1
  timeout 90 /tmp/dllm_base bench step $M --prefix 32736 --steps 8 --batch 1 > $R/base-32k-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/wide-*.txt $R/*32k-*.txt | sed 's|.*/r/||' | cut -c1-120
for i in 1 2; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 --temperature 0.7 --top-p 0.9 > $R/sampled-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 > $R/greedy-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/sampled-*.txt $R/greedy-*.txt | sed 's|.*/r/||' | cut -c1-100
timeout 90 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 > $R/prefill-4096.txt 2>&1
grep -h "^ *4096\|rror" $R/prefill-4096.txt
timeout 90 $C/dllm bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate.txt 2>&1
grep -h "tokens/s\|rror" $R/generate.txt
cd $OUT && tar czf r.tgz r
