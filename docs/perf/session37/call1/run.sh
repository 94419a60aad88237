#!/usr/bin/env bash
# Session 37, call 1: the weight streams through a shared-memory ring (cp.async, 3 chunks in
# flight a warp) against their registers (one chunk). The CUDA suite (with the new
# stream_ring_long_k_matches_cpu) and fixtures; memcheck of the ring test; mini fp8 steps at
# batch 1 and 4 both ways; mini bf16 at batch 1 with 16-row items (the streams) both ways against
# the default wgmma tiles; then flash with fp8 experts at batch 1 and 4 both ways, and
# `bench kernels` of flash fp8 at batch 1 both ways.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
t=stream_ring_long_k_matches_cpu
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 $t > $R/memcheck-$t.txt 2>&1
echo "memcheck $t rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-$t.txt
pack
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do for v in true false; do
  timeout 60 $C/dllm bench step $M --quantization fp8 --batch 1,4 --stream-ring $v > $R/mini-fp8-$v-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --batch 1 --moe-item-rows 16 --stream-ring $v > $R/mini-bf16-s16-$v-$i.txt 2>&1
done; timeout 60 $C/dllm bench step $M --batch 1 > $R/mini-bf16-tiles-$i.txt 2>&1; done
grep -H "^ *[0-9]" $R/mini-*.txt | sed 's|.*/r/||' | cut -c1-110
pack
F="--preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8"
for v in true false; do
  s=$(date +%s)
  timeout 150 $C/dllm bench step $F --batch 1,4 --stream-ring $v > $R/flash-fp8-$v-1.txt 2>&1
  echo "flash $v took $(( $(date +%s) - s )) s"
  grep -H "^ *[0-9]\|rror" $R/flash-fp8-$v-1.txt | sed 's|.*/r/||' | cut -c1-110
  pack
done
grep -l "rror\|panic" $R/*.txt
pack
