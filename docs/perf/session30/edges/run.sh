#!/usr/bin/env bash
# Session 30, call 1. dllm (this build): three more programmatic edges in a MoE layer (all under
# CudaOptions::expert_pdl): the one-warpgroup tiles' gate_up as the router's dependent (moe_route
# or moe_permute), the next input norm (add_moe_rms_norm) as those tiles' down's dependent, and
# the warp-specialized down as its gate_up's dependent (its producers' first weight TMAs before
# the wait). Against the same binary with `--expert-pdl false` and dllm_base (17412cf's build),
# interleaved; then the tests.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
gunzip -c $C/dllm_base.gz > /tmp/dllm_base && chmod +x /tmp/dllm_base
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head -20
M="--preset mini --device cuda --block 32"
S="bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16"
for i in 1 2 3; do
  timeout 60 $C/dllm $S > $R/step-new-$i.txt 2>&1
  timeout 60 $C/dllm $S --expert-pdl false > $R/step-nopdl-$i.txt 2>&1
  timeout 60 /tmp/dllm_base $S > $R/step-base-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-100
S2="bench step $M --prefix 1024 --steps 8 --batch 64,128"
for i in 1 2; do
  timeout 90 $C/dllm $S2 > $R/wide-new-$i.txt 2>&1
  timeout 90 /tmp/dllm_base $S2 > $R/wide-base-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/wide-*.txt | sed 's|.*/r/||' | cut -c1-100
for i in 1 2; do
  timeout 90 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1 > $R/step-32k-new-$i.txt 2>&1
  timeout 90 /tmp/dllm_base bench step $M --prefix 32736 --steps 8 --batch 1 > $R/step-32k-base-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-32k-*.txt | sed 's|.*/r/||' | cut -c1-100
for i in 1 2; do
  timeout 90 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-new-$i.txt 2>&1
  timeout 90 /tmp/dllm_base bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-base-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-110
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape cuda_graph fused_router > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
cd $OUT && tar czf r.tgz r
