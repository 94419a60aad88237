#!/usr/bin/env bash
# Session 33, call 3: the dense layer's temporaries (gate_up, activation) of recorded steps in a
# scratch the graphs share (dense.rs MlpScratch), against b94e2ca (dllm_b94: their own graph
# memory, which a replay of another recording remapped before layer 0's gate_up), and dllm_ws0
# (this build with cuBLAS given a workspace of 0 bytes: are its 4-byte memsets before some GEMMs
# gone, and at what cost?). Tests; steps, prefills and `bench generate` interleaved; traces with
# the idle stretches.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
for b in dllm_b94 dllm_ws0 test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 graph mid_shape > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,16,64 > $R/step-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_b94 bench step $M --prefix 1024 --steps 8 --batch 1,16,64 > $R/step-base-$i.txt 2>&1
  timeout 60 /tmp/dllm_ws0 bench step $M --prefix 1024 --steps 8 --batch 1,16,64 > $R/step-ws0-$i.txt 2>&1
done
for i in 1 2; do
  for b in new ws0; do
    bin=$C/dllm; [ $b = ws0 ] && bin=/tmp/dllm_ws0
    timeout 120 $bin bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-$b-$i.txt 2>&1
  done
done
for i in 1 2; do
  timeout 90 $C/dllm bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate-new-$i.txt 2>&1
  timeout 90 /tmp/dllm_b94 bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate-base-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic\|tokens/s" $R/step-*.txt $R/prefill-*.txt $R/generate-*.txt | sed 's|.*/r/||' | cut -c1-110
trace() {  # name, binary, then the dllm arguments
  local n=$1 bin=$2; shift 2
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/$n.tsv timeout 120 $bin "$@" > $R/$n-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/$n.tsv --steps 4 --gaps 6 > $R/$n-timeline.txt 2>&1
  gzip -f $R/$n.tsv
}
trace b64-new $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64
trace b16-new $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16
trace b16-base /tmp/dllm_b94 bench step $M --prefix 1024 --steps 8 --batch 16
trace prefill-ws0 /tmp/dllm_ws0 bench prefill $M --prompt-len 4096 --batch 1
for n in b64-new b16-new b16-base prefill-ws0; do echo "== $n"; sed -n 1,12p $R/$n-timeline.txt | cut -c1-140; done
cd $OUT && tar czf r.tgz r
