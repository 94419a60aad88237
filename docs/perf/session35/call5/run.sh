#!/usr/bin/env bash
# Session 35, call 5: the shared expert's cuBLAS GEMMs on the side stream sized for fewer SMs
# (cublasSetSmCountTarget; --side-gemm-sms). Calls 1's traces had the routed gate_up of a
# 4,096-token prefill start ~16 us after moe_permute ended, while the shared expert's down
# (nvjet, 132 CTAs) still held every SM. Settings: every SM (cuBLAS's own), 32, 66, 100;
# prefills of 4,096 x 1 and steps at batch 64 and 128 interleaved; traced prefills at every SM
# and at 66.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
M="--preset mini --device cuda --block 32"
declare -A F=([all]="" [32]="--side-gemm-sms 32" [66]="--side-gemm-sms 66" [100]="--side-gemm-sms 100")
for i in 1 2 3; do
  for s in all 32 66 100; do
    timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 ${F[$s]} > $R/prefill-$s-$i.txt 2>&1
    [ $i -le 2 ] && timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64,128 ${F[$s]} > $R/step-$s-$i.txt 2>&1
  done
done
for s in all 32 66 100; do echo "== $s: prefill $(grep -h '^ *4096' $R/prefill-$s-*.txt | awk '{printf "%s (%sx) ", $4, $NF}')"; grep -h "^ *[0-9]" $R/step-$s-*.txt | awk '{print $1, $5}' | sort -n -s -k1,1 | awk '{a[$1]=a[$1]" "$2} END {for (k in a) print "  "k": "a[k]}' | sort -n; done
for s in all 66; do
  CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/p-$s.tsv timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 ${F[$s]} > $R/prefill-$s-traced.txt 2>&1
  python3 tools/kernel-trace/timeline.py $R/p-$s.tsv --steps 4 > $R/prefill-$s-timeline.txt 2>&1; rm -f $R/p-$s.tsv
  echo "== traced prefill $s"; grep -A16 "^layer kind seen" $R/prefill-$s-timeline.txt | head -18 | cut -c1-100
done
grep -l "rror\|panic" $R/*.txt
cd $OUT && tar czf r.tgz r
