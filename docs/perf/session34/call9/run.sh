#!/usr/bin/env bash
# Session 34, call 9: the dense weight stream's third form: no cluster reduction after its wait;
# its k ranges' partial sums are added by the next kernel (qk_norm_rope_store_v4_parts for QKV,
# add_rms_norm_parts for attention out). dllm and the tests: that build; `--dense-stream` turns
# the stream on (off by default: cuBLAS); dllm_base: a1030e3's (its stream: the second form).
# Tests (their opts run the stream), fixtures, memcheck; batch-1 steps interleaved.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
for b in dllm_base test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 100 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 30 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 60 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 tiny_ops_match_cpu > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for i in 1 2 3; do
  timeout 30 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1 --dense-stream > $R/step-parts-$i.txt 2>&1
  timeout 30 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1 > $R/step-cublas-$i.txt 2>&1
  timeout 30 /tmp/dllm_base bench step $M --prefix 1024 --steps 8 --batch 1 --dense-stream > $R/step-old-$i.txt 2>&1
done
for n in parts cublas old; do echo "== $n b1: $(grep -h '^ *1 ' $R/step-$n-*.txt | awk '{printf "%s ", $5}')"; done
grep -l "rror\|panic" $R/*.txt
cd $OUT && tar czf r.tgz r
