#!/usr/bin/env bash
# Session 35, call 1: the attention's output projection, the dense MLP's and the shared expert's
# (beside the routed experts) down projections added into the residual stream by their cuBLAS
# GEMMs (beta = 1; CudaOptions::residual_gemm) instead of written out for the next norm to add.
# One build; `--residual-gemm false` is the code before. Tests, fixtures, memcheck of the
# mid-shape test (both residual paths, the shared expert beside); bench kernels at batch 64 and
# prefill-size steps; steps, prefills and bench generate interleaved; a traced prefill each way.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for b in 64 128; do
  for g in true false; do timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch $b --residual-gemm $g > $R/k-$g-b$b.txt 2>&1; done
done
grep -H "add_rms_norm\|add_moe_rms_norm\|attention out\|mlp down\|sum of kernel" $R/k-*.txt | sed 's|.*/r/||'
for i in 1 2 3; do
  for g in true false; do
    timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,16,64,128 --residual-gemm $g > $R/step-$g-$i.txt 2>&1
    timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 --residual-gemm $g > $R/prefill-$g-$i.txt 2>&1
  done
done
for g in true false; do echo "== residual $g"; grep -h "^ *[0-9]" $R/step-$g-*.txt | awk '{print $1, $5}' | sort -n -s -k1,1 | awk '{a[$1]=a[$1]" "$2} END {for (k in a) print k": "a[k]}' | sort -n; done
for g in true false; do echo "== prefill residual $g: $(grep -h '^ *4096' $R/prefill-$g-*.txt | awk '{printf "%s (%sx) ", $4, $NF}')"; done
# (32768 was a slip: the longest prompt at block 32 is 32736; both runs stopped at the check.)
for g in true false; do timeout 90 $C/dllm bench prefill $M --prompt-len 4096,32768 --batch 8 --residual-gemm $g > $R/prefill8-$g.txt 2>&1; done
grep -H "^ *[0-9]" $R/prefill8-*.txt | sed 's|.*/r/||'
for i in 1 2; do
  for g in true false; do
    timeout 60 $C/dllm bench generate $M --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 --residual-gemm $g > $R/generate-$g-$i.txt 2>&1
  done
done
grep -H "tokens/s" $R/generate-*.txt | sed 's|.*/r/||'
for g in true false; do
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/p-$g.tsv timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 --residual-gemm $g > $R/prefill-$g-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/p-$g.tsv --steps 4 > $R/prefill-$g-timeline.txt 2>&1; rm -f $R/p-$g.tsv
  echo "== traced prefill residual $g"; grep -A16 "^layer kind seen" $R/prefill-$g-timeline.txt | head -18 | cut -c1-100
done
grep -l "rror\|panic" $R/*.txt
cd $OUT && tar czf r.tgz r
