#!/usr/bin/env bash
# Session 52's fourth call (one H200 asked for; `.carry` from `bash tools/carry-ab.sh a8afc15` at
# 08757c9, plus combine_bench built from docs/perf/session52/atomic-combine/combine_bench.cu).
# Down adding its outputs into one f32 row a token (`--moe-sum-rows true`, off by default) against
# the slot rows: first the stand-in benchmark, then its test alone (60 s), the CUDA suite and the
# fixtures (the default path's kernels changed too: params, row_outs, the norm's zero branch), then
# steps at batch 16-128 (batch 1 takes the weight stream, which writes slot rows either way) twice,
# interleaved, for new (08757c9, default) and sum (the option), once for base (a8afc15);
# `bench kernels` at batch 64 and bench generate for new and sum. ~4 min.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=/tmp/bins
mkdir -p $C; for f in dllm dllm-base; do cp .carry/$f $C/$f && chmod +x $C/$f; done
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
./.carry/combine_bench > $R/combine-bench.txt 2>&1; echo "combine_bench rc=$? ${SECONDS}s"; cat $R/combine-bench.txt
bash tools/unpack-tests.sh test_cuda_kernels
timeout 60 /tmp/test_cuda_kernels --test-threads=1 --exact cuda::moe_sum_rows_match_cpu > $R/sum-test.txt 2>&1
sum=$?; echo "moe_sum_rows_match_cpu rc=$sum ${SECONDS}s"; grep -h "test result\|panicked\|engine generations\|max err" $R/sum-test.txt | head -5
skip=; [ $sum = 0 ] || skip="--skip moe_sum_rows_match_cpu"
bash tools/device-suite.sh "$R" $skip
echo "suite: ${SECONDS}s"
pack
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
ways="base new sum"; [ $sum = 0 ] || ways="base new"
for i in 1 2; do
  for way in $ways; do
    [ $i = 2 ] && [ $way = base ] && continue  # the default path's check: one round
    b=$C/dllm; [ $way = base ] && b=$C/dllm-base
    extra=; [ $way = sum ] && extra="--moe-sum-rows true"
    timeout 120 $b bench step $M --batch 16,64,128 $extra --json $R/step-$way-$i.json > $R/step-$way-$i.txt 2>&1
    echo "step $way $i rc=$? $(grep -E '^ +[0-9]+ (random|mask) ' $R/step-$way-$i.txt | awk '{printf "b%s %s %sx  ", $1, $5, $11}')"
    grep -h "rror\|warning" $R/step-$way-$i.txt | cut -c1-200
  done
  pack
done
echo "steps: ${SECONDS}s"
for way in $ways; do
  [ $way = base ] && continue
  extra=; [ $way = sum ] && extra="--moe-sum-rows true"
  for n in 64; do
    timeout 90 $C/dllm bench kernels --preset mini --device cuda --prefix 1024 --batch $n $extra > $R/kernels-b$n-$way.txt 2>&1
    echo "kernels b$n $way rc=$? ${SECONDS}s"; grep -E "moe_down|moe_gate_up|add_moe_rms|add_rms_norm|sum of" $R/kernels-b$n-$way.txt | cut -c1-150
  done
  timeout 60 $C/dllm bench generate --preset mini --device cuda --requests 64 --tokens-per-step 2 $extra --json $R/generate-$way.json > $R/generate-$way.txt 2>&1
  echo "generate $way rc=$? ${SECONDS}s"; grep -h "tokens/s\|rror" $R/generate-$way.txt | cut -c1-200
  pack
done
echo "total: ${SECONDS}s"
pack
