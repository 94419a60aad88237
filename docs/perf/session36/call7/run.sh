#!/usr/bin/env bash
# Session 36, call 7: c4ed237 (CudaBackend::gate_and_up, behaviour unchanged) on the GPU: the CUDA
# suite, fixtures, memcheck of the mid-shape test (the shared expert's items through its tensor
# maps and pointers) and of the dense-stream test (the weight stream's gate and up); a batch-64
# step and the 4,096-token prefill once each.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 170 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
for t in mid_shape_ops_match_cpu dense_stream_long_k_matches_cpu; do
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 $t > $R/memcheck-$t.txt 2>&1
  echo "memcheck $t rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-$t.txt
done
pack
M="--preset mini --device cuda --block 32"
timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64 > $R/step.txt 2>&1
timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill.txt 2>&1
grep -H "^ *[0-9]" $R/step.txt $R/prefill.txt | sed 's|.*/r/||' | cut -c1-150
grep -l "rror\|panic" $R/*.txt
pack
