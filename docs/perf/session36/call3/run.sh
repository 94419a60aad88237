#!/usr/bin/env bash
# Session 36, call 3: the shared expert among the warp-specialized tiles' items (its own TMA
# tensor maps; no cap on its items there), against the old policy (`--shared-expert-items 8`:
# at most 8 items, so batch 64 and up, and prefill, ran it on the side stream by cuBLAS). The
# CUDA suite and fixtures, memcheck of the mid-shape test (128-row items with the shared expert
# among them) and of the graph test; steps at batch 1, 16, 64, 128 and the 4,096-token prefill,
# new and old interleaved, three runs each; `bench kernels` at 64 and 128 both ways. Last, a
# timing-only build with SAMPLE_CLUSTER 4 and SAMPLE_CANDIDATES 2048 (dllm-c4): sample_rows and
# sample_rows_bf16 at batch 16 and 64.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 170 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
for t in mid_shape_ops_match_cpu cuda_graph_replay_equals_eager; do
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 $t > $R/memcheck-$t.txt 2>&1
  echo "memcheck $t rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-$t.txt
done
pack
M="--preset mini --device cuda --block 32"
P="--prefix 1024"
OLD="--shared-expert-items 8"
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M $P --steps 8 --batch 1,16,64,128 > $R/step-new-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M $P --steps 8 --batch 1,16,64,128 $OLD > $R/step-old-$i.txt 2>&1
  timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-new-$i.txt 2>&1
  timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 $OLD > $R/prefill-old-$i.txt 2>&1
done
grep -H "^ *[0-9]" $R/step-*.txt $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-100
pack
for v in new old; do for b in 64 128; do
  F=""; [ $v = old ] && F="$OLD"
  timeout 60 $C/dllm bench kernels $M $P --batch $b $F > $R/k-$v-b$b.txt 2>&1
  grep -h "moe_\|mlp\|silu\|sum of" $R/k-$v-b$b.txt | cut -c1-100
done; done
pack
S="--temperature 0.7 --top-p 0.9"
for v in true false; do for b in 16 64; do
  timeout 60 $C/dllm-c4 bench kernels $M $P --batch $b $S --sample-bf16 $v > $R/k-c4-$v-b$b.txt 2>&1
  grep -h "sample_rows\|sum of" $R/k-c4-$v-b$b.txt | cut -c1-100
done; done
grep -l "rror\|panic" $R/*.txt
pack
