#!/usr/bin/env bash
# Session 33, call 1: the router kernels' picks written by one helper (route_select.cuh
# write_pick). dllm: this build; dllm_0617: 0617602's build (session 32, call 5). Tests and
# memcheck of the router tests; steps and prefills interleaved; a batch-1 trace and ncu of the
# batch-1 chain's small kernels (what binds them).
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
for b in dllm_0617 test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 200 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 mid_shape fused_router router graph > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,16,64,128 > $R/step-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_0617 bench step $M --prefix 1024 --steps 8 --batch 1,16,64,128 > $R/step-base-$i.txt 2>&1
  timeout 120 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-new-$i.txt 2>&1
  timeout 120 /tmp/dllm_0617 bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-base-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-100
CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/b1.tsv timeout 120 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1 > $R/b1-traced.txt 2>&1
python3 tools/kernel-trace/timeline.py $R/b1.tsv --steps 4 > $R/b1-timeline.txt 2>&1; rm -f $R/b1.tsv
sed -n 1,22p $R/b1-timeline.txt | cut -c1-90
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
timeout 200 $NCU --cache-control none --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats \
  --section MemoryWorkloadAnalysis --section LaunchStats --section SchedulerStats \
  -k regex:'^(add_moe_rms_norm|qk_norm_rope_store_v4|block_attention_deep|attention_combine|add_rms_norm|moe_route|moe_gate_up_m64|moe_down_m64)$' \
  --launch-skip 400 --launch-count 16 \
  $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1 --disable-cuda-graph --mem-fraction-static 0.05 > $R/ncu-b1.txt 2>&1; echo "ncu rc=$?"
grep -E "^  [a-z_0-9]+ |Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per|ERROR" $R/ncu-b1.txt | head -80
cd $OUT && tar czf r.tgz r
