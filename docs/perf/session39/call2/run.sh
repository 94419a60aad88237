#!/usr/bin/env bash
# Session 39, call 2: the register tiles' widening by integer operations and one bf16 multiply
# (fp8x2_to_bf16x2). The exhaustive probe of the widening against torch's e4m3 -> bf16; the CUDA
# suite and fixtures; memcheck of the fp8 mid-shape test; mini fp8 at batch 8, 16, 32, 64 with
# the register tiles on and off and with 64-row items forced, interleaved; flash fp8 at batch 8
# and 16 with 64-row items; bench kernels of mini fp8 at batch 16 (64-row items) and 64.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
python3 docs/perf/session39/call2/fp8_widen_probe.py $C/fp8_widen_probe.cubin > $R/probe.txt 2>&1; echo "probe rc=$?" >> $R/probe.txt
cat $R/probe.txt
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do
  timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 8,16,32,64 > $R/m-on-$i.txt 2>&1
  timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 8,16,32,64 --fp8-codes-in-registers false > $R/m-off-$i.txt 2>&1
  timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 8,16 --moe-item-rows 64 > $R/m-m64-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/m-*.txt | sed 's|.*/r/||' | cut -c1-100
pack
timeout 120 $C/dllm bench step --preset flash --quantization fp8 $B --batch 8,16 --moe-item-rows 64 > $R/f-m64.txt 2>&1
timeout 120 $C/dllm bench step --preset flash --quantization fp8 $B --batch 8 > $R/f-default.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/f-*.txt | sed 's|.*/r/||' | cut -c1-100
pack
timeout 120 $C/dllm bench kernels --preset mini --quantization fp8 --device cuda --batch 64 --prefix 1024 > $R/k-b64.txt 2>&1
timeout 120 $C/dllm bench kernels --preset mini --quantization fp8 --device cuda --batch 16 --prefix 1024 --moe-item-rows 64 > $R/k-b16-m64.txt 2>&1
grep -H "moe_g\|moe_d\|rror" $R/k-*.txt | sed 's|.*/r/||' | head -12
pack
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 mid_shape_fp8_ops_match_cpu > $R/memcheck-fp8-mid.txt 2>&1
echo "memcheck rc=$?"; grep -h "ERROR SUMMARY" $R/memcheck-fp8-mid.txt
pack
