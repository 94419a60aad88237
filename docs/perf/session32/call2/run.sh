#!/usr/bin/env bash
# Session 32, call 2. dllm (C): the norms keep 8 values a thread (NORM_CACHE 8, threads a row
# from the hidden size: 61 / 52 registers, four CTAs an SM where 70 / 71 took three) and
# qk_norm_rope_store_v4 issues all of a warp's heads' loads (8) before the position's; dllm_d
# (D): C with __maxnreg__ 48 / 40 on the norms (five / six CTAs an SM, a few spilled bytes);
# dllm_base: 56e307b (session 31's final code). Tests of C; traces of the three at batch 64 and
# a 4,096-token prefill; steps interleaved.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
for b in dllm_base dllm_d test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 mid_shape moe_norm rope graph > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
trace() {  # name, binary, then the dllm arguments
  local n=$1 bin=$2; shift 2
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/$n.tsv timeout 120 $bin "$@" > $R/$n-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/$n.tsv --steps 4 > $R/$n-timeline.txt 2>&1
  rm -f $R/$n.tsv
}
for v in base c d; do
  bin=/tmp/dllm_$v; [ $v = c ] && bin=$C/dllm
  trace prefill-$v $bin bench prefill $M --prompt-len 4096 --batch 1
  trace b64-$v $bin bench step $M --prefix 1024 --steps 8 --batch 64
done
for f in $R/*-timeline.txt; do echo "== $f"; grep -E "add_moe_rms_norm|add_rms_norm|qk_norm_rope|middle layer" $f | head -8 | cut -c1-75; done
for i in 1 2 3; do
  for v in c d base; do
    bin=/tmp/dllm_$v; [ $v = c ] && bin=$C/dllm
    timeout 60 $bin bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16 > $R/step-$v-$i.txt 2>&1
  done
done
for i in 1 2; do
  for v in c d base; do
    bin=/tmp/dllm_$v; [ $v = c ] && bin=$C/dllm
    timeout 60 $bin bench step $M --prefix 1024 --steps 8 --batch 64,128 > $R/wide-$v-$i.txt 2>&1
    timeout 120 $bin bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt $R/wide-*.txt $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-100
cd $OUT && tar czf r.tgz r
