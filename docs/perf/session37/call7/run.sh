#!/usr/bin/env bash
# Session 37, call 7: the last commit (39507fa, behaviour unchanged from 80b54f1). The CUDA suite
# and fixtures; flash with fp8 experts at batch 1 (the issue 12 line), two runs; mini bf16 at
# batch 1, 16, 64 (issue 13's lines); then a traced flash fp8 batch-1 step (the kernel timeline,
# tools/kernel-trace/) for what the next session should attack.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do
  timeout 90 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1 > $R/flash-fp8-$i.txt 2>&1
  timeout 90 $C/dllm bench step --preset mini $B --batch 1,16,64 > $R/mini-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/flash-fp8-*.txt $R/mini-*.txt | sed 's|.*/r/||' | cut -c1-110
pack
CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/f.tsv timeout 90 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1 > $R/flash-traced.txt 2>&1
python3 tools/kernel-trace/timeline.py $R/f.tsv --steps 4 --gaps 10 > $R/flash-fp8-b1-timeline.txt 2>&1; rm -f $R/f.tsv
head -40 $R/flash-fp8-b1-timeline.txt | cut -c1-150
grep -l "rror\|panic" $R/*.txt
pack
