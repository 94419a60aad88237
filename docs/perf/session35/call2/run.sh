#!/usr/bin/env bash
# Session 35, call 2: call 1's residual GEMMs split in two knobs, plus the QKV projection in bf16
# (cuBLAS's bf16 output, qk_norm_rope_store's _bf16 kernels). One build, four settings:
#   A: the defaults (residual GEMMs with the shared expert's, QKV in bf16)
#   B: --residual-shared false (the shared expert's output read by add_moe_rms_norm, as before)
#   C: --qkv-bf16 false (QKV in f32, as before)
#   D: --residual-gemm false --qkv-bf16 false (the code before this session)
# Tests, fixtures, memcheck of the mid-shape and wide-heads tests (the v4 and v8 bf16 kernels);
# bench kernels at batch 64 each way; steps and the 4,096-token prefill interleaved.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
for t in mid_shape_ops_match_cpu wide_heads_ops_match_cpu; do
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 $t > $R/memcheck-$t.txt 2>&1; echo "memcheck $t rc=$?" | tee -a $R/memcheck-$t.txt
  grep -h "ERROR SUMMARY\|test result" $R/memcheck-$t.txt
done
M="--preset mini --device cuda --block 32"
declare -A F=([A]="" [B]="--residual-shared false" [C]="--qkv-bf16 false" [D]="--residual-gemm false --qkv-bf16 false")
for s in A B C D; do timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch 64 ${F[$s]} > $R/k-$s-b64.txt 2>&1; done
grep -H "qkv\|qk_norm\|add_rms_norm\|add_moe_rms_norm\|attention out\|mlp down\|sum of kernel" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-110
for i in 1 2 3; do
  for s in A B C D; do
    timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,16,64,128 ${F[$s]} > $R/step-$s-$i.txt 2>&1
    timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 ${F[$s]} > $R/prefill-$s-$i.txt 2>&1
  done
done
for s in A B C D; do echo "== $s"; grep -h "^ *[0-9]" $R/step-$s-*.txt | awk '{print $1, $5}' | sort -n -s -k1,1 | awk '{a[$1]=a[$1]" "$2} END {for (k in a) print k": "a[k]}' | sort -n; done
for s in A B C D; do echo "== prefill $s: $(grep -h '^ *4096' $R/prefill-$s-*.txt | awk '{printf "%s (%sx) ", $4, $NF}')"; done
grep -l "rror\|panic" $R/*.txt
cd $OUT && tar czf r.tgz r
