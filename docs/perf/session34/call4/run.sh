#!/usr/bin/env bash
# Session 34, call 4: cuBLAS without its workspace past 4,096 rows (prefill forwards; the decode
# steps up to batch 128 keep it). dllm and the tests: that build; dllm_base: a1030e3's. Tests and
# fixtures; the PyTorch baseline (tools/baseline_torch.py --variants triton --mask-frac 0) at every
# batch of the issue with both builds' steps attached (same call, same card); prefills of 4,096 x
# 1 and batch-128 steps interleaved.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
for b in dllm_base test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 150 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
M="--preset mini --device cuda --block 32"
for i in 1 2 3 4; do
  timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_base bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-base-$i.txt 2>&1
done
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 64,128 > $R/step-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_base bench step $M --prefix 1024 --steps 8 --batch 64,128 > $R/step-base-$i.txt 2>&1
done
for n in new base; do echo "== $n"; grep -h "^ *[0-9]" $R/step-$n-*.txt | awk '{print $1, $5}' | sort -n -s -k1,1 | awk '{a[$1]=a[$1]" "$2} END {for (k in a) print k": "a[k]}' | sort -n; echo "prefill: $(grep -h '^ *4096' $R/prefill-$n-*.txt | awk '{printf "%s (%sx) ", $4, $NF}')"; done
timeout 300 python3 tools/baseline_torch.py --preset mini --batch 1,4,16,64,128 --prefix 1024 --block 32 \
    --warmup 10 --iters 50 --variants triton --mask-frac 0 --json "$R/baseline-mini-mf0.json" > "$R/baseline-mini-mf0.log" 2>&1
echo "baseline rc=$?"; tail -n 6 "$R/baseline-mini-mf0.log" | cut -c1-60
B=$([ -s "$R/baseline-mini-mf0.json" ] && echo "--baseline $R/baseline-mini-mf0.json")
for n in new base; do
  D=$C/dllm; [ $n = base ] && D=/tmp/dllm_base
  timeout 90 $D bench step --preset mini --device cuda --batch 1,4,16,64,128 --prefix 1024 --block 32 --steps 16 \
      --tokens random $B --json "$R/step-mini-$n.json" > "$R/step-mini-$n.txt" 2>&1
  echo "== $n"; grep "^ *[0-9]" $R/step-mini-$n.txt | cut -c1-150
done
grep -l "rror\|panic" $R/*.txt
cd $OUT && tar czf r.tgz r
