#!/usr/bin/env bash
# Session 25, call 4: the warp-specialized expert tiles take their (item, column tile) units in
# order from a counter as CTAs come free (dllm, this build), against the fixed stride gridDim.x
# apart (dllm_base: call 2's build run with --moe-ws-cluster 1, whose tiles are the code as it
# stood). ncu had the strided tiles read 964 MB from DRAM for 624 MB of gate_up weights at
# batch 128: an expert's second item missing the L2 its first filled. The mid-shape test
# first, the two binaries interleaved (steps, kernels, prefill, generate), ncu of the new tiles'
# DRAM bytes, then the CUDA suite, the fixtures and memcheck of the mid-shape test.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 90 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu > $R/mid-test.txt 2>&1; echo "rc=$?" >> $R/mid-test.txt
grep -h "test result\|^rc=\|panicked" $R/mid-test.txt
M="--preset mini --device cuda --block 32"
declare -A BIN=([new]="$C/dllm" [base]="$C/dllm_base")
declare -A OPT=([new]="" [base]="--moe-ws-cluster 1")
for i in 1 2; do
  for v in new base; do
    timeout 60 ${BIN[$v]} bench step $M --prefix 1024 --steps 8 --batch 64,128 ${OPT[$v]} > $R/step-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-120
for v in new base; do
  for b in 64 128; do
    timeout 40 ${BIN[$v]} bench kernels $M --prefix 1024 --batch $b --steps 4 ${OPT[$v]} > $R/k-b$b-$v.txt 2>&1
  done
done
grep -H "moe_gate\|moe_down\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-130
for v in new base; do
  timeout 100 ${BIN[$v]} bench prefill $M --prompt-len 4096 --batch 1,8 ${OPT[$v]} > $R/prefill-4096-$v.txt 2>&1
  timeout 60 ${BIN[$v]} bench prefill $M --prompt-len 32736 --batch 1 ${OPT[$v]} > $R/prefill-32736-$v.txt 2>&1
done
for v in new base; do
  timeout 100 ${BIN[$v]} bench prefill $M --prompt-len 4096 --batch 1,8 ${OPT[$v]} > $R/prefill2-4096-$v.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/prefill*.txt | sed 's|.*/r/||' | cut -c1-120
for v in new base; do
  timeout 90 ${BIN[$v]} bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 ${OPT[$v]} > $R/generate-$v.txt 2>&1
done
grep -H "tokens/s\|rror" $R/generate-*.txt | sed 's|.*/r/||' | cut -c1-160
NCU="ncu --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis --metrics dram__bytes_read.sum,lts__t_bytes.sum,lts__t_sectors_op_read.sum,l1tex__m_xbar2l1tex_read_bytes.sum,lts__throughput.avg.pct_of_peak_sustained_elapsed,gpu__time_duration.sum"
S="bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 4 --disable-cuda-graph --mem-fraction-static 0.05 --batch 128"
timeout 120 $NCU -k regex:'^moe_(gate_up|down)_m128_ws$' --launch-skip 650 --launch-count 2 $C/dllm $S > $R/ncu-b128-new.txt 2>&1; echo "ncu rc=$?"
grep -E "^  moe_|Duration|DRAM Throughput|L2 Cache Throughput|dram__bytes|lts__|l1tex__m|ERROR" $R/ncu-b128-new.txt | head -24
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 mid_shape_ops_match_cpu > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
cd $OUT && tar czf r.tgz r
