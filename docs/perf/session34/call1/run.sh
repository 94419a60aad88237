#!/usr/bin/env bash
# Session 34, call 1: the 128-row warp-specialized expert tiles with each consumer warpgroup
# taking 64 of the item's rows by all 256 weight rows (one m64n256k16 a k16) instead of all 128
# rows by its own 128 weight rows (two m64n128k16). dllm: this build; dllm_base: a4745ab's;
# dllm_wsr: this build plus session 33's ws-by-rows.patch (cuBLAS without a workspace past 2,048
# rows). Tests, fixtures, memcheck of the item-size test; bench kernels at batch 64 and 128;
# steps, prefills and bench generate interleaved; one traced prefill each of base and new.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
for b in dllm_base dllm_wsr test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for b in 64 128; do
  timeout 60 $C/dllm bench kernels $M --prefix 1024 --batch $b > $R/k-new-b$b.txt 2>&1
  timeout 60 /tmp/dllm_base bench kernels $M --prefix 1024 --batch $b > $R/k-base-b$b.txt 2>&1
done
grep -H "moe_gate_up_m128_ws\|moe_down_m128_ws" $R/k-*.txt | sed 's|.*/r/||'
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64,128 > $R/step-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_base bench step $M --prefix 1024 --steps 8 --batch 16,64,128 > $R/step-base-$i.txt 2>&1
  timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_base bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-base-$i.txt 2>&1
  timeout 60 /tmp/dllm_wsr bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-wsr-$i.txt 2>&1
done
for n in new base; do echo "== $n"; grep -h "^ *[0-9]" $R/step-$n-*.txt | awk '{print $1, $5}' | sort -n -s -k1,1 | awk '{a[$1]=a[$1]" "$2} END {for (k in a) print k": "a[k]}' | sort -n; done
for n in new base wsr; do echo "== prefill $n: $(grep -h '^ *4096' $R/prefill-$n-*.txt | awk '{printf "%s (%sx) ", $4, $NF}')"; done
for i in 1 2; do
  timeout 60 $C/dllm bench generate $M --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_base bench generate $M --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate-base-$i.txt 2>&1
done
grep -H "tokens/s" $R/generate-*.txt | sed 's|.*/r/||'
for n in new base; do
  B=$C/dllm; [ $n = base ] && B=/tmp/dllm_base
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/p-$n.tsv timeout 60 $B bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-$n-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/p-$n.tsv --steps 4 > $R/prefill-$n-timeline.txt 2>&1; rm -f $R/p-$n.tsv
  echo "== traced prefill $n"; grep -A16 "^layer kind seen" $R/prefill-$n-timeline.txt | head -18 | cut -c1-100
done
grep -l "rror\|panic" $R/*.txt
cd $OUT && tar czf r.tgz r
