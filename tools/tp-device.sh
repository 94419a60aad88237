#!/usr/bin/env bash
# Runs ON a GPU machine of 2+ GPUs (nvidia-h200-x2, or -x4 with TP=4), from the repo root, with
# .carry/ built by tools/gpu-test.sh (or tools/carry-ab.sh: the test binaries gzipped):
# tensor parallelism (and FP8 experts) measured.
#   1. the CUDA tests (the TP ones at 2 ranks, and at 4 where the machine has 4 GPUs, against
#      one GPU: tiny lockstep, mini logits);
#   2. `bench step` of mini at TP1, TP2 (and TP4), flash at TP2 (and TP4) (per-GPU floor +
#      all-reduce time);
#   3. `dllm serve` with the guide's flags at --tp-size $TP on flash's shapes (random weights,
#      --load-format dummy) answering the guide's streaming curl call: at TP=4 the guide's exact
#      command (issue 15).
# TP: the ranks of the server and the largest bench runs (2 by default; 4 on nvidia-h200-x4).
# STEPS picks a subset (default "tests mini flash serve fp8"; "eager" adds mini without CUDA
# graphs). All of it takes longer than one device call may (600 s): split it, e.g.
#   STEPS=tests, then STEPS="mini flash", then STEPS="serve fp8". Results land in $OUT.
set -uo pipefail
# Everything goes to a work folder, packed into $OUT/tp-results.tar.gz at the end (the device
# tool brings back only a few files per call).
FINAL_OUT=${OUT:-/tmp/tp-out}
OUT=$(mktemp -d)
mkdir -p "$FINAL_OUT"
trap 'tar czf "$FINAL_OUT/tp-results.tar.gz" -C "$OUT" .' EXIT
C=.carry
TP=${TP:-2}
STEPS=${STEPS:-tests mini flash serve fp8}
want() { [[ " $STEPS " == *" $1 "* ]]; }
# cuBLAS and NCCL are loaded at run time: put their CUDA 13 folders on the loader's path.
DEVICE_LIBS='libnccl.so.2*' source tools/device-env.sh "$OUT"
echo "NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-unset}" | tee -a "$OUT/libs.txt"
GPUS=$(nvidia-smi --list-gpus | wc -l)
[ "$GPUS" -ge "$TP" ] || echo "warning: TP=$TP on $GPUS GPUs: the runs past $GPUS ranks will stop with the startup error"
B="--prefix 1024 --block 32 --steps 8"
bash tools/unpack-tests.sh test_cuda_kernels
tp_sizes=$([ "$TP" -ge 4 ] && echo "2 $TP" || echo "$TP")

if want tests; then
    # Every CUDA test (the TP2 and fp8 ones among them).
    timeout 500 /tmp/test_cuda_kernels --test-threads=1 --nocapture >"$OUT/tests.log" 2>&1
    echo "cuda_kernels tests rc=$?"; grep -E "^test .*(FAILED|ok)$|vs one GPU|fp8 vs bf16|relative error|panicked|test result" "$OUT/tests.log" | head -40
    timeout 60 $C/dllm generate --device cuda --tp-size $TP --json --max-new-tokens 64 >"$OUT/tiny_tp$TP.json" 2>"$OUT/tiny_tp$TP.err"
    echo "tiny tp$TP generate rc=$?"; head -c 300 "$OUT/tiny_tp$TP.json"; echo; tail -3 "$OUT/tiny_tp$TP.err"
    # Startup errors that say why: more ranks than GPUs, a size that does not divide the heads.
    for tp in $((GPUS * 2)) 3; do
        echo "--- generate --device cuda --tp-size $tp:"; $C/dllm generate --device cuda --tp-size $tp --max-new-tokens 8 2>&1 | tail -1
    done
fi
if want mini; then
    for tp in 1 $tp_sizes; do
        timeout 240 $C/dllm bench step --preset mini --device cuda --tp-size $tp --batch 1,4,16,64 $B \
            --json "$OUT/step-mini-tp$tp.json" >"$OUT/step-mini-tp$tp.log" 2>&1
        echo "mini tp$tp rc=$?"; tail -n 6 "$OUT/step-mini-tp$tp.log"
        want eager || continue
        timeout 240 $C/dllm bench step --preset mini --device cuda --tp-size $tp --batch 1,4,16,64 $B --disable-cuda-graph \
            --json "$OUT/step-mini-tp$tp-eager.json" >"$OUT/step-mini-tp$tp-eager.log" 2>&1
        echo "mini tp$tp eager rc=$?"; tail -n 6 "$OUT/step-mini-tp$tp-eager.log"
    done
fi
if want flash; then
    for tp in $tp_sizes; do
        timeout 300 $C/dllm bench step --preset flash --device cuda --tp-size $tp --batch 1,4,16,64 $B \
            --json "$OUT/step-flash-tp$tp.json" >"$OUT/step-flash-tp$tp.log" 2>&1
        echo "flash tp$tp rc=$?"; tail -n 6 "$OUT/step-flash-tp$tp.log"
    done
fi
if want fp8 && $C/dllm bench step --help | grep -q -- --quantization; then
    # Flash on ONE H200 (GPU 0) with fp8 experts; mini fp8 next to mini bf16; the expert GEMMs'
    # bandwidth, W8A16 against bf16.
    timeout 300 $C/dllm bench step --preset flash --device cuda --quantization fp8 --batch 1,4,16 $B \
        --json "$OUT/step-flash-fp8.json" >"$OUT/step-flash-fp8.log" 2>&1
    echo "flash fp8 tp1 rc=$?"; tail -n 5 "$OUT/step-flash-fp8.log"
    for q in bf16 fp8; do
        flag=$([ $q = fp8 ] && echo "--quantization fp8")
        timeout 200 $C/dllm bench step --preset mini --device cuda $flag --batch 1,4,16,64 $B \
            --json "$OUT/step-mini-$q.json" >"$OUT/step-mini-$q.log" 2>&1
        echo "mini $q rc=$?"; tail -n 5 "$OUT/step-mini-$q.log"
        for b in 1 64; do
            timeout 120 $C/dllm bench kernels --preset mini --device cuda $flag --batch $b --prefix 1024 \
                --json "$OUT/kernels-mini-$q-b$b.json" >"$OUT/kernels-mini-$q-b$b.log" 2>&1
            echo "kernels mini $q b$b rc=$?"; grep -iE "moe_|total" "$OUT/kernels-mini-$q-b$b.log" | head -8
        done
    done
fi
if want serve; then
    M=/tmp/flash-config
    rm -rf $M && $C/dllm make-model --preset flash --config-only --out $M 2>&1 | tail -1
    # The guide's command line (its --tp-size 4 where TP=4), the weights drawn on the GPUs.
    $C/dllm serve --model-path $M --load-format dummy --host 127.0.0.1 --port 8188 --trust-remote-code \
        --disable-cuda-graph --disable-radix-cache --mem-fraction-static 0.9 --attention-backend flashinfer \
        --diffusion-algorithm LowConfidence --diffusion-block-size 32 --tp-size $TP --max-running-requests 1 \
        >"$OUT/serve.log" 2>&1 &
    pid=$!
    for _ in $(seq 240); do curl -sf http://127.0.0.1:8188/health >/dev/null && break; sleep 1; done
    echo "server up after ${SECONDS}s of this script"
    curl -sN -X POST "http://127.0.0.1:8188/generate" -H "Content-Type: application/json" -d '{
        "text": "<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>Why did Camus say that Sisyphus was happy?<|role_end|><role>ASSISTANT</role>",
        "stream": true,
        "sampling_params": {"temperature": 0, "max_new_tokens": 1024}
    }' >"$OUT/curl.txt" 2>&1
    echo "curl rc=$?: $(grep -c '^data:' "$OUT/curl.txt") SSE events"; head -c 600 "$OUT/curl.txt"; echo; tail -c 400 "$OUT/curl.txt"; echo
    curl -s http://127.0.0.1:8188/get_server_info | head -c 400; echo
    kill $pid; wait $pid 2>/dev/null
    grep -iE "error|panic|warn" "$OUT/serve.log" | head -5
fi
