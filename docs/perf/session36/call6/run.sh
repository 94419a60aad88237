#!/usr/bin/env bash
# Session 36, call 6: the final review's commits on the GPU (61d0c01: the dense MLP's output as a
# borrowed MlpOut, behaviour unchanged; moe_gemm_ws's 64-row branch without its loop over
# halves). The CUDA suite (every_item_size forces the 64-row warp-specialized tiles), fixtures,
# memcheck of the mid-shape and sampler tests; steps, sampled against greedy at batch 64, and
# the 4,096-token prefill, two runs each.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 170 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
for t in mid_shape_ops_match_cpu sample_kernel_matches_sample_row_u; do
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 $t > $R/memcheck-$t.txt 2>&1
  echo "memcheck $t rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-$t.txt
done
pack
M="--preset mini --device cuda --block 32"
P="--prefix 1024"
S="--temperature 0.7 --top-p 0.9"
for i in 1 2; do
  timeout 60 $C/dllm bench step $M $P --steps 8 --batch 1,16,64,128 > $R/step-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M $P --steps 8 --batch 64 $S > $R/sampled-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M $P --steps 8 --batch 64 > $R/greedy-$i.txt 2>&1
  timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-$i.txt 2>&1
done
grep -H "^ *[0-9]" $R/step-*.txt $R/sampled-*.txt $R/greedy-*.txt $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-150
grep -l "rror\|panic" $R/*.txt
pack
