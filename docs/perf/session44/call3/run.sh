#!/usr/bin/env bash
# Session 44's third device call, prepared and NOT run (no device was lent in sessions 44 and 45):
# after call1, on the same warm H200, with call1's .carry (`bash tools/carry-ab.sh e4b0d7a`).
# Flash fp8 at batch 1 and 16 against dllm-base (its expert epilogues' loads changed: moe_fp8_m16,
# moe_gemm_wgmma_fp8_ra); a 4,096-token prefill against dllm-base and with the slot loads together
# (their kernel holds two CTAs an SM, not four). Split from call1 to keep that call within 600 s.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
F="--preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,16"
timeout 120 $C/dllm-base bench step $F > $R/f-base-1.txt 2>&1  # one pair: flash's random weights take ~40 s a run
timeout 120 $C/dllm bench step $F > $R/f-new-1.txt 2>&1
for f in $R/f-*.txt; do echo "$(basename $f) $(grep -E '^ +[0-9]+ random' $f | awk '{printf "%s ", $5}')"; done
pack
P="--preset mini --device cuda --prompt-len 4096 --batch 1"
for i in 1 2; do
  timeout 100 $C/dllm-base bench prefill $P > $R/p-base-$i.txt 2>&1
  timeout 100 $C/dllm bench prefill $P > $R/p-off-$i.txt 2>&1
  timeout 100 $C/dllm bench prefill $P --slot-loads-together true > $R/p-sl-$i.txt 2>&1
done
grep -H "^ *[0-9]\|rror" $R/p-*.txt | sed 's|.*/r/||' | cut -c1-120
pack
