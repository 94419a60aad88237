#!/usr/bin/env bash
# Session 32, call 3: the landed form (dllm): the norms keep 8 values a thread with the threads
# a row from the hidden size (add_moe_rms_norm 61 registers, four CTAs an SM), add_rms_norm capped
# at 40 registers (six); qk_norm_rope_store as before. Tests; traces of batch 64 and a 4,096-token
# prefill; steps interleaved with dllm_base (56e307b); then the lines of this build.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
for b in dllm_base test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 mid_shape moe_norm graph > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
trace() {  # name, binary, then the dllm arguments
  local n=$1 bin=$2; shift 2
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/$n.tsv timeout 120 $bin "$@" > $R/$n-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/$n.tsv --steps 4 > $R/$n-timeline.txt 2>&1
  rm -f $R/$n.tsv
}
trace prefill $C/dllm bench prefill $M --prompt-len 4096 --batch 1
trace b64 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64
trace b16 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16
for f in $R/*-timeline.txt; do echo "== $f"; grep -E "add_moe_rms_norm|add_rms_norm|middle layer" $f | head -4 | cut -c1-75; done
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16 > $R/step-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_base bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16 > $R/step-base-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64,128 > $R/wide-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_base bench step $M --prefix 1024 --steps 8 --batch 64,128 > $R/wide-base-$i.txt 2>&1
  timeout 120 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-new-$i.txt 2>&1
  timeout 120 /tmp/dllm_base bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-base-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt $R/wide-*.txt $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-100
for i in 1 2; do
  timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1,8 > $R/step-32k-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 --temperature 0.7 --top-p 0.9 > $R/sampled-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 > $R/greedy-$i.txt 2>&1
done
timeout 120 $C/dllm bench prefill $M --prompt-len 4096 --batch 8 > $R/prefill8-new.txt 2>&1
timeout 90 $C/dllm bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate.txt 2>&1
grep -H "^ *[0-9]\|rror\|panic\|tokens/s" $R/step-32k-*.txt $R/sampled-*.txt $R/greedy-*.txt $R/prefill8-*.txt $R/generate.txt | sed 's|.*/r/||' | cut -c1-100
cd $OUT && tar czf r.tgz r
