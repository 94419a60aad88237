#!/usr/bin/env bash
# Session 45's device call, prepared and NOT run (no device was lent in session 45): after
# docs/perf/session44/call1-3, on the same warm H200 and .carry (`dllm` at or after 27f5c1e).
# Issue 13's realistic routing: `--balanced-router` (bench::router_balance) balances each MoE
# layer's expert bias of the random weights as training does, so a block routes to about as many
# experts as a trained router's (~150 of 256 at batch 1; all 256 from batch 4); on the CPU at
# mini's router layout 81 -> 158 a block. The PyTorch baseline balances its own weights the same
# way (tools/baseline_torch.py --balanced-router) and runs first, so the step's table can quote
# the speedup where both route alike (experts/layer within 5%).
# 1. The device test of the hook (set_expert_bias routes on the GPU).
# 2. The baseline (its Triton fused-MoE variant, random ids), balanced, batch 1-128.
# 3. Our steps, balanced, against it; and as drawn (today's figures, for the ratio of the two).
# 4. bench kernels at batch 1 and 64, balanced (where a realistic step's time goes).
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/unpack-tests.sh test_cuda_kernels
timeout 90 /tmp/test_cuda_kernels --test-threads=1 expert_bias_set_on_the_device_routes > $R/test-expert-bias.txt 2>&1
echo "expert bias test rc=$? $(grep -h 'test result' $R/test-expert-bias.txt | cut -c1-60)"
pack
M="--preset mini --device cuda --block 32 --prefix 1024"
SECONDS=0
timeout 330 python3 tools/baseline_torch.py --preset mini --batch 1,4,16,64,128 --prefix 1024 --block 32 \
    --warmup 10 --iters 50 --variants triton --mask-frac 0 --balanced-router \
    --json "$R/baseline-mini-balanced.json" > "$R/baseline-mini-balanced.log" 2>&1
echo "baseline rc=$? ${SECONDS}s"; grep "balanced" "$R/baseline-mini-balanced.log"; tail -n 6 "$R/baseline-mini-balanced.log" | cut -c1-80
pack
BL=$([ -s "$R/baseline-mini-balanced.json" ] && echo "--baseline $R/baseline-mini-balanced.json")
timeout 120 $C/dllm bench step $M --batch 1,4,16,64,128 --steps 16 --balanced-router $BL \
    --json "$R/step-mini-balanced.json" > "$R/step-mini-balanced.txt" 2>&1
timeout 90 $C/dllm bench step $M --batch 1,4,16,64,128 --steps 16 --json "$R/step-mini-drawn.json" > "$R/step-mini-drawn.txt" 2>&1
for f in step-mini-balanced step-mini-drawn; do echo "== $f"; grep "balanced\|^ *[0-9]" $R/$f.txt | cut -c1-200; done
pack
for b in 1 64; do
  timeout 90 $C/dllm bench kernels $M --batch $b --balanced-router > $R/k-balanced-b$b.txt 2>&1
done
grep -H "balanced\|moe_\|sum of\|rror" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-120
grep -l "rror\|panic" $R/*.txt
pack
# (session 46) bench generate, issue 13's end-to-end line, balanced and as drawn.
G="--preset mini --device cuda --requests 64 --tokens-per-step 2"
timeout 90 $C/dllm bench generate $G --balanced-router --json "$R/generate-balanced.json" > "$R/generate-balanced.txt" 2>&1
timeout 90 $C/dllm bench generate $G --json "$R/generate-drawn.json" > "$R/generate-drawn.txt" 2>&1
grep -H "tokens/s\|balanced\|rror" $R/generate-*.txt | sed 's|.*/r/||' | cut -c1-200
pack
