#!/usr/bin/env bash
# Runs ON one H200 (nvidia-h200), from the repo root, with .carry/ built by tools/gpu-test.sh:
# issue 13's measurements, in one call. STEPS picks a subset (default: all of
#   "tests kernels mini fp8 flash switch"):
#   tests   every CUDA test (kernels against their CPU twins; one-GPU runs skip the TP2 ones);
#   baseline tools/baseline_torch.py (torch.compile and the Triton fused MoE, each step in a CUDA
#           graph) at the same shapes, random ids on balanced routers (MASK_FRAC 0: realistic routing); `mini` then
#           quotes its speedup;
#   kernels `bench kernels` of mini at batch 1, 16 and 64, bf16 and fp8 experts;
#   mini    `bench step` of mini at batch 1, 4, 16, 64, bf16 and fp8 experts;
#   eager   the same bf16 steps with --disable-cuda-graph (what the step's CUDA graph saves);
#   prefill `bench prefill` of mini, prompts of 4096 and 32736 tokens, batch 1 and 8;
#   flash   `bench step` of flash with fp8 experts on this one GPU (batch 1, 4, 16);
#   switch  the expert GEMMs' item sizes: batch 4, 16, 64 with 16- and 64-row items forced;
#   long    a 32,736-token prefix (the context is 32,768: the block fits after it): `bench kernels` at batch 1 and `bench step` at batch 1 and 8.
# Steps run with --tokens random,mask (a row each: random ids on the routers balanced as training
# balances them, bench's default, route like a trained router; masks as before); kernels with --tokens random.
# Results are packed into $OUT/speed-results.tar.gz (the device tool brings back a few files).
set -uo pipefail
FINAL_OUT=${OUT:-/tmp/speed-out}
OUT=$(mktemp -d)
mkdir -p "$FINAL_OUT"
trap 'tar czf "$FINAL_OUT/speed-results.tar.gz" -C "$OUT" .' EXIT
C=.carry
STEPS=${STEPS:-tests baseline kernels mini eager flash prefill switch long}
want() { [[ " $STEPS " == *" $1 "* ]]; }
source tools/device-env.sh "$OUT"
git rev-parse --short HEAD 2>/dev/null | tee "$OUT/commit.txt"
B="--prefix 1024 --block 32 --steps 8"
T="--tokens random,mask"

if want tests; then
    timeout 400 $C/test_cuda_kernels --test-threads=1 --nocapture >"$OUT/tests.log" 2>&1
    echo "cuda_kernels tests rc=$?"; grep -E "^test .*(FAILED|ok)$|panicked|test result" "$OUT/tests.log" | head -40
fi
BASE=""
if want baseline; then
    timeout ${BASELINE_TIMEOUT:-300} python3 tools/baseline_torch.py --preset mini --batch 1,4,16,64 --prefix 1024 --block 32 \
        --warmup 10 --iters 50 --variants ${BASELINE_VARIANTS:-compile,triton} --mask-frac ${MASK_FRAC:-0} --tune-budget 30 \
        --json "$OUT/baseline-mini.json" >"$OUT/baseline-mini.log" 2>&1
    echo "baseline rc=$?"; tail -n 8 "$OUT/baseline-mini.log"
    [ -s "$OUT/baseline-mini.json" ] && BASE="--baseline $OUT/baseline-mini.json"
fi
if want kernels; then
    for q in ${KERNEL_DTYPES:-bf16 fp8}; do
        flag=$([ $q = fp8 ] && echo "--quantization fp8")
        for b in 1 16 64; do
            timeout 120 $C/dllm bench kernels --preset mini --device cuda $flag --tokens random --batch $b --prefix 1024 \
                --json "$OUT/kernels-mini-$q-b$b.json" >"$OUT/kernels-mini-$q-b$b.log" 2>&1
            echo "kernels mini $q b$b rc=$?"; grep -iE "experts|moe_g|moe_d|attention |total" "$OUT/kernels-mini-$q-b$b.log" | head -8
        done
    done
fi
if want mini; then
    for q in bf16 fp8; do
        flag=$([ $q = fp8 ] && echo "--quantization fp8")
        timeout 200 $C/dllm bench step --preset mini --device cuda $flag $T --batch 1,4,16,64 $B \
            $([ $q = bf16 ] && echo "$BASE") --json "$OUT/step-mini-$q.json" >"$OUT/step-mini-$q.log" 2>&1
        echo "mini $q rc=$?"; tail -n 10 "$OUT/step-mini-$q.log"
    done
fi
if want eager; then
    timeout 200 $C/dllm bench step --preset mini --device cuda $T --batch 1,4,16,64 $B --disable-cuda-graph \
        --json "$OUT/step-mini-eager.json" >"$OUT/step-mini-eager.log" 2>&1
    echo "mini eager rc=$?"; tail -n 10 "$OUT/step-mini-eager.log"
fi
if want switch; then
    # Where each item size of the expert GEMMs wins (the automatic choice is by rows per expert and
    # the GPU: on Hopper bf16 takes the wgmma tiles, 128-row items from 48 rows an expert).
    for r in 16 64 128; do
        timeout 200 $C/dllm bench step --preset mini --device cuda $T --batch 1,4,16,64,128 $B --moe-item-rows $r \
            --json "$OUT/step-mini-items$r.json" >"$OUT/step-mini-items$r.log" 2>&1
        echo "mini, $r-row items rc=$?"; tail -n 4 "$OUT/step-mini-items$r.log"
    done
fi
if want flash; then
    timeout 300 $C/dllm bench step --preset flash --device cuda --quantization fp8 $T --batch 1,4,16 $B \
        --json "$OUT/step-flash-fp8.json" >"$OUT/step-flash-fp8.log" 2>&1
    echo "flash fp8 rc=$?"; tail -n 8 "$OUT/step-flash-fp8.log"
fi
if want long; then
    timeout 120 $C/dllm bench kernels --preset mini --device cuda --tokens random --batch 1 --prefix 32736 \
        --json "$OUT/kernels-mini-long-b1.json" >"$OUT/kernels-mini-long-b1.log" 2>&1
    echo "kernels mini prefix 32736 b1 rc=$?"; grep -iE "experts|moe_g|moe_d|attention|total" "$OUT/kernels-mini-long-b1.log" | head -8
    timeout 300 $C/dllm bench step --preset mini --device cuda $T --batch 1,8 --prefix 32736 --block 32 --steps 8 \
        --json "$OUT/step-mini-long.json" >"$OUT/step-mini-long.log" 2>&1
    echo "mini prefix 32736 rc=$?"; tail -n 4 "$OUT/step-mini-long.log"
fi
if want prefill; then
    timeout 240 $C/dllm bench prefill --preset mini --device cuda --prompt-len 4096,32736 --batch 1,8 --repeats ${REPEATS:-1} \
        --json "$OUT/prefill-mini.json" >"$OUT/prefill-mini.log" 2>&1
    echo "prefill rc=$?"; tail -n 6 "$OUT/prefill-mini.log"
fi
