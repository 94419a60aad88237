#!/usr/bin/env bash
# Session 23, call 5: block_attention_deep_lean (--att-lean: a warp skips the O rescale where no
# row's max moved, l sums P before rounding) against block_attention_deep, one binary's two
# settings interleaved, its tests first; then (default settings, b5db98b's kernels) what stalls
# the two kernels the last session's lines hang on. ncu's per-reason stall ratios (warp cycles a reason holds per issued
# instruction, all warps of the kernel averaged: the deep attention's producer warpgroup is a
# third of its warps), its pipes' utilisation and DRAM rate, for
#   - block_attention_deep in a batch-1 step at a 32,736 prefix (its step launch: after the
#     prefill's 80 launches), and in a batch-64 step at 1k;
#   - sample_rows in a batch-64 sampled step (temperature 0.7, top-p 0.9).
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
MET="--metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed,gpu__time_duration.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,lts__t_sector_hit_rate.pct"
M="--preset mini --device cuda --block 32"
timeout 150 $C/test_cuda_kernels --test-threads=1 attention > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 attention_variants > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck.txt
for i in 1 2 3; do
  for v in true false; do
    timeout 60 $C/dllm bench step $M --prefix 32736 --steps 4 --batch 1,8 --att-lean $v > $R/lean-32k-$v-$i.txt 2>&1
  done
done
for i in 1 2; do
  for v in true false; do
    timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 1,16,64 --att-lean $v > $R/lean-1k-$v-$i.txt 2>&1
  done
done
grep -H "^ *[0-9]\|rror" $R/lean-*.txt | sed 's|.*/r/||' | cut -c1-120
for v in true false; do
  timeout 100 $C/dllm bench prefill $M --prompt-len 4096 --batch 1,8 --att-lean $v > $R/prefill-4096-$v.txt 2>&1
  timeout 60 $C/dllm bench prefill $M --prompt-len 32736 --batch 1 --att-lean $v > $R/prefill-32736-$v.txt 2>&1
  timeout 40 $C/dllm bench kernels $M --prefix 32736 --batch 1 --steps 4 --att-lean $v > $R/k-32k-b1-$v.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-120
grep -H "block_attention\|sum of" $R/k-*.txt | sed 's|.*/r/||'
run_ncu() {  # name, kernel regex, launch-skip, bench args...
  local name=$1 k=$2 skip=$3; shift 3
  timeout 150 $NCU $MET -k regex:$k --launch-skip $skip --launch-count 1 $C/dllm "$@" --disable-cuda-graph --mem-fraction-static 0.3 > $R/ncu-$name.txt 2>&1
  echo "== $name rc=$? lines $(wc -l < $R/ncu-$name.txt)"
  grep -E "gpu__time_duration|dram__throughput|issue_active|hit_rate" $R/ncu-$name.txt
  grep -E "stalled_.*ratio" $R/ncu-$name.txt | sort -k3 -n -r | head -8
  grep -E "pct_of_peak" $R/ncu-$name.txt | grep -v "  0$" | sort -k3 -n -r | head -8
}
run_ncu att-32k-b1 block_attention_deep 150 bench step $M --prefix 32736 --steps 4 --batch 1
run_ncu att-1k-b64 block_attention_deep 260 bench step $M --prefix 1024 --steps 4 --batch 64
run_ncu sample-b64 sample_rows 4 bench step $M --prefix 1024 --steps 4 --batch 64 --temperature 0.7 --top-p 0.9
cd $OUT && tar czf r.tgz r
