#!/usr/bin/env bash
# Session 57's sixth call: call4's comparison for the own rope's fifth form: call4's staging, with
# a row a half-warp (16-byte pieces a lane), half the instructions a row; call5's ncu found the
# fourth form's prologue bound by its instructions (the kernel's doubled at batch 1), not by the
# instruction cache. `.carry/dllm` (`--rope-in-attention` on by default) against the same binary
# with it off and against `.carry/dllm-base` (bbfd34f). Trimmed to the device time left: the
# attention variants' test, one round of steps, `bench kernels` at 1 and 64.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
bash tools/unpack-tests.sh test_cuda_kernels
timeout 200 /tmp/test_cuda_kernels --test-threads=1 attention_variants_match_cpu > $R/cuda-tests.txt 2>&1
rc=$?
echo "tests rc=$rc (${SECONDS}s)"; grep -h "test result\|panicked\|FAILED" $R/cuda-tests.txt | head
pack
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; exit 1; }
way_cmd() { case $1 in base) echo "$C/dllm-base";; *) echo "$C/dllm";; esac; }
way_args() { case $1 in off) echo "--rope-in-attention false";; esac; }
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
for round in 1; do
  for way in base off on; do
    timeout 100 $(way_cmd $way) bench step $M --batch 1,16,64,128 $(way_args $way) > $R/w-$way-$round.txt 2>&1
    echo "$way-$round rc=$? $(grep -E '^ +[0-9]+ (random|mask) ' $R/w-$way-$round.txt | awk '{printf "b%s %s %sx  ", $1, $5, $11}')"
    grep -h "rror" $R/w-$way-$round.txt | cut -c1-200
  done
  pack
done
echo "steps (${SECONDS}s)"
for b in 1 64; do for way in off on; do
  timeout 60 $C/dllm bench kernels --preset mini --device cuda --prefix 1024 --batch $b $(way_args $way) > $R/kernels-b$b-$way.txt 2>&1
  echo "kernels b$b $way rc=$? $(grep -E 'block_attention|qk_norm|sum of kernel' $R/kernels-b$b-$way.txt | tr -s ' ' | cut -c1-90 | tr '\n' '|')"
done; done
pack
echo "total: ${SECONDS}s"
