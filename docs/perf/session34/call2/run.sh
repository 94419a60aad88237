#!/usr/bin/env bash
# Session 34, call 2: down's 128-row warp-specialized tiles holding each item's x in shared
# memory across MOE_WSX_GROUP column tiles (moe_down_m128_wsx). dllm: this build (groups of 4;
# `--moe-held-x false` is the tiles of call 1); dllm_g2 / dllm_g8: groups of 2 / 8; dllm_wsr:
# this build plus session 33's ws-by-rows.patch (cuBLAS without a workspace past 2,048 rows).
# Tests, fixtures, memcheck of the held-x and mid-shape tests; bench kernels at batch 64 and
# 128; steps, prefills and bench generate interleaved; one traced prefill each, held and not.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
for b in dllm_g2 dllm_g8 dllm_wsr test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 held_x mid_shape_ops_match_cpu > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
declare -A BIN=([held]=$C/dllm [not]=$C/dllm [g2]=/tmp/dllm_g2 [g8]=/tmp/dllm_g8 [wsr]=/tmp/dllm_wsr)
declare -A EXTRA=([held]="" [not]="--moe-held-x false" [g2]="" [g8]="" [wsr]="")
run() { local n=$1; shift; timeout 60 ${BIN[$n]} "$@" ${EXTRA[$n]}; }
for b in 64 128; do for n in held not g2 g8; do run $n bench kernels $M --prefix 1024 --batch $b > $R/k-$n-b$b.txt 2>&1; done; done
grep -H "moe_gate_up_m128_ws\|moe_down_m128" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-120
for i in 1 2 3; do
  for n in held not g2 g8 wsr; do run $n bench step $M --prefix 1024 --steps 8 --batch 64,128 > $R/step-$n-$i.txt 2>&1; done
  for n in held not g2 g8 wsr; do run $n bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-$n-$i.txt 2>&1; done
done
for n in held not g2 g8 wsr; do echo "== $n"; grep -h "^ *[0-9]" $R/step-$n-*.txt | awk '{print $1, $5}' | sort -n -s -k1,1 | awk '{a[$1]=a[$1]" "$2} END {for (k in a) print k": "a[k]}' | sort -n; echo "prefill: $(grep -h '^ *4096' $R/prefill-$n-*.txt | awk '{printf "%s (%sx) ", $4, $NF}')"; done
for i in 1 2; do for n in held not wsr; do run $n bench generate $M --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate-$n-$i.txt 2>&1; done; done
grep -H "tokens/s" $R/generate-*.txt | sed 's|.*/r/||' | cut -c1-110
for n in held not; do
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/p-$n.tsv timeout 60 ${BIN[$n]} bench prefill $M --prompt-len 4096 --batch 1 ${EXTRA[$n]} > $R/prefill-$n-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/p-$n.tsv --steps 4 > $R/prefill-$n-timeline.txt 2>&1; rm -f $R/p-$n.tsv
  echo "== traced prefill $n"; grep -A16 "^layer kind seen" $R/prefill-$n-timeline.txt | head -17 | tail -3 | cut -c1-100
done
grep -l "rror\|panic" $R/*.txt
cd $OUT && tar czf r.tgz r
