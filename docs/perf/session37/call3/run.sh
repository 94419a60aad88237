#!/usr/bin/env bash
# Session 37, call 3: fp8 16-row items as shared-memory tiles (moe_*_fp8_m16: weights and x
# staged for the CTA's 128 weight rows) against the weight streams (ring, registers). The CUDA
# suite (small_items_long_k_match_cpu covers every form) and fixtures; memcheck of that test;
# flash with fp8 experts at batch 1 and 4, the three forms interleaved, two runs each; mini fp8
# the same; `bench kernels` of flash fp8 at batch 1 with the tiles.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
t=small_items_long_k_match_cpu
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 $t > $R/memcheck-$t.txt 2>&1
echo "memcheck $t rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-$t.txt
pack
F="--preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4"
M="--preset mini --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,4"
for i in 1 2; do
  for P in "$F" "$M"; do
    n=$(echo "$P" | awk '{print $2}')
    timeout 60 $C/dllm bench step $P > $R/$n-tiles-$i.txt 2>&1
    timeout 60 $C/dllm bench step $P --fp8-m16-tiles false --stream-ring true > $R/$n-ring-$i.txt 2>&1
    timeout 60 $C/dllm bench step $P --fp8-m16-tiles false --stream-ring false > $R/$n-regs-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/flash-*.txt $R/mini-*.txt | sed 's|.*/r/||' | cut -c1-110
pack
timeout 60 $C/dllm bench kernels --preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --batch 1 > $R/k-flash-fp8-b1-tiles.txt 2>&1
timeout 60 $C/dllm bench kernels --preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --batch 4 > $R/k-flash-fp8-b4-tiles.txt 2>&1
grep -h "moe_\|sum of\|rror" $R/k-flash-fp8-b*-tiles.txt | cut -c1-110
grep -l "rror\|panic" $R/*.txt
pack
