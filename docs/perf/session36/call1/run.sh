#!/usr/bin/env bash
# Session 36, call 1: a sampled step's logits in bf16 (CudaOptions::sample_bf16, sample_rows_bf16).
# The CUDA suite (the sampler's test now draws every row set as f32 and as bf16) and the fixtures;
# memcheck of the sampler's test; `bench kernels` at batch 64 sampled, bf16 logits on and off;
# sampled (on, off) and greedy steps at batch 16 and 64 interleaved; then a traced 4,096-token
# prefill with its longest idle stretches (what the ~0.4 ms a prefill with no kernel running is).
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 170 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED\|sampler:" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 sample_kernel_matches_sample_row_u > $R/memcheck-sampler.txt 2>&1
echo "memcheck rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-sampler.txt
pack
M="--preset mini --device cuda --block 32 --prefix 1024"
S="--temperature 0.7 --top-p 0.9"
for v in true false; do
  timeout 60 $C/dllm bench kernels $M --batch 64 $S --sample-bf16 $v > $R/k-$v-b64.txt 2>&1
  grep -h "sample_rows\|lm_head\|sum of" $R/k-$v-b64.txt | cut -c1-100
done
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --steps 8 --batch 16,64 $S > $R/sampled-true-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --steps 8 --batch 16,64 $S --sample-bf16 false > $R/sampled-false-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --steps 8 --batch 16,64 > $R/greedy-$i.txt 2>&1
done
grep -H "^ *\(16\|64\) " $R/sampled-*.txt $R/greedy-*.txt | sed 's|.*/r/||' | cut -c1-90
pack
CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/p.tsv timeout 90 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-traced.txt 2>&1
python3 tools/kernel-trace/timeline.py $R/p.tsv --steps 4 --gaps 10 > $R/prefill-timeline.txt 2>&1; rm -f $R/p.tsv
grep -h -A4 "^step" $R/prefill-timeline.txt | head -30 | cut -c1-160
grep -l "rror\|panic" $R/*.txt
pack
