#!/usr/bin/env bash
# Session 38, call 7: the lines on e8d1718's build (call 6's binaries, whose suite passed there):
# issue 12's flash fp8 command (batch 1, 4, 16, two runs; batch 16 with 64-row items forced, for
# the next session), mini fp8 beside bf16 at 1, 4, 16, 64; issue 13's other lines: the 32,736
# prefix at batch 1 and 8, prefill 4,096 x 8 and 32,736 x 1, sampled against greedy at 16 and
# 64, `bench generate` at 64 requests.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
B="--device cuda --block 32 --prefix 1024 --steps 8"
M="--preset mini --device cuda --block 32"
for i in 1 2; do
  timeout 120 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1,4,16 > $R/flash-fp8-$i.txt 2>&1
done
timeout 90 $C/dllm bench step --preset flash --quantization fp8 $B --batch 16 --moe-item-rows 64 > $R/flash-fp8-b16-m64.txt 2>&1
timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 1,4,16,64 > $R/mini-fp8.txt 2>&1
timeout 120 $C/dllm bench step --preset mini $B --batch 1,4,16,64 > $R/mini-bf16.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/flash-*.txt $R/mini-*.txt | sed 's|.*/r/||' | cut -c1-120
pack
timeout 120 $C/dllm bench step $M --prefix 32736 --steps 8 --batch 1,8 > $R/step-32k.txt 2>&1
S="--temperature 0.7 --top-p 0.9"
timeout 90 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 $S > $R/sampled.txt 2>&1
timeout 90 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 > $R/greedy.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/step-32k.txt $R/sampled.txt $R/greedy.txt | sed 's|.*/r/||' | cut -c1-120
pack
timeout 120 $C/dllm bench prefill $M --prompt-len 4096 --batch 8 > $R/prefill-4096x8.txt 2>&1
timeout 150 $C/dllm bench prefill $M --prompt-len 32736 --batch 1 > $R/prefill-32736x1.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/prefill-*.txt | sed 's|.*/r/||' | cut -c1-130
pack
for i in 1 2; do
  timeout 90 $C/dllm bench generate $M --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 > $R/generate-$i.txt 2>&1
done
grep -H "tokens/s\|rror" $R/generate-*.txt | cut -c1-160
pack
