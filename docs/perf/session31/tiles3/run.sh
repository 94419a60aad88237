#!/usr/bin/env bash
# Session 31, call 6: the one-warpgroup 64-row wgmma tiles (the experts of batch 1 to 32) with 3
# stages instead of 4, so that three CTAs share an SM (a batch-1 gate_up's 648 CTAs in 1.6 waves
# instead of 2.45). The tests, the trace of batch 1, then steps against dllm_edges (509d10a's
# build), interleaved.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
gunzip -c $C/dllm_edges.gz > /tmp/dllm_edges && chmod +x /tmp/dllm_edges
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
M="--preset mini --device cuda --block 32"
CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/b1.tsv timeout 120 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1 > $R/b1-traced.txt 2>&1
python3 tools/kernel-trace/timeline.py $R/b1.tsv --steps 4 > $R/b1-timeline.txt 2>&1; gzip -f $R/b1.tsv
sed -n 6,20p $R/b1-timeline.txt
for i in 1 2 3; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16,32 > $R/step-new-$i.txt 2>&1
  timeout 60 /tmp/dllm_edges bench step $M --prefix 1024 --steps 8 --batch 1,4,8,16,32 > $R/step-edges-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror\|panic" $R/step-*.txt | sed 's|.*/r/||' | cut -c1-80
cd $OUT && tar czf r.tgz r
