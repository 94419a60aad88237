#!/usr/bin/env bash
# Session 34, call 7: the wgmma attention kernels skip O's rescale in a warp whose rows' running
# maxes all held (corr exactly 1; no bit changes). dllm and the tests: that build; dllm_base:
# a1030e3's. Tests, fixtures, memcheck of the attention tests; prefills, steps interleaved; a
# traced prefill each.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
for b in dllm_base test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 150 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 attention > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for i in 1 2 3 4; do
  for n in new base; do
    D=$C/dllm; [ $n = base ] && D=/tmp/dllm_base
    timeout 60 $D bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-$n-$i.txt 2>&1
    [ $i -le 3 ] && timeout 60 $D bench step $M --prefix 1024 --steps 8 --batch 1,16,64 > $R/step-$n-$i.txt 2>&1
    [ $i -le 3 ] && timeout 90 $D bench step $M --prefix 32736 --steps 8 --batch 1,8 > $R/step32k-$n-$i.txt 2>&1
  done
done
for n in new base; do echo "== $n"; grep -h "^ *[0-9]" $R/step-$n-*.txt $R/step32k-$n-*.txt | awk '{print $1"@"$4, $5}' | sort -s -k1,1 | awk '{a[$1]=a[$1]" "$2} END {for (k in a) print k": "a[k]}' | sort; echo "prefill: $(grep -h '^ *4096' $R/prefill-$n-*.txt | awk '{printf "%s (%sx) ", $4, $NF}')"; done
for i in 1 2; do for n in new base; do
  D=$C/dllm; [ $n = base ] && D=/tmp/dllm_base
  timeout 120 $D bench prefill $M --prompt-len 32736 --batch 1 > $R/prefill32k-$n-$i.txt 2>&1
done; done
grep -H "^ *32736" $R/prefill32k-*.txt | sed 's|.*/r/||' | cut -c1-100
for n in new base; do
  D=$C/dllm; [ $n = base ] && D=/tmp/dllm_base
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/p-$n.tsv timeout 60 $D bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-$n-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/p-$n.tsv --steps 4 > $R/prefill-$n-timeline.txt 2>&1; rm -f $R/p-$n.tsv
  echo "== traced prefill $n: $(grep -m1 block_attention_deep $R/prefill-$n-timeline.txt | cut -c1-90)"
done
grep -l "rror\|panic" $R/*.txt
cd $OUT && tar czf r.tgz r
