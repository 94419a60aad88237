#!/usr/bin/env bash
# Session 62's first call, on db8b4b5's build (.carry/dllm, stripped and gzipped; session 61's
# call6 ran the suite on it) with tools/kernel-trace/build.sh's library.
# On an H200: the lines (steps at batch 1, 16, 64 and 128, two rounds; `bench generate`), then
# session 58's knob sweep at batch 64 and 128 as far as the time allows.
# On another card: why `--fused-qkv-rope` leaves the steps level when its kernel alone is 7%
# faster at batch 128 (session 61): the kernel timeline of steps at batch 64 and 128, fused and
# not (tools/kernel-trace, timeline.py's middle-layer medians), then the same steps untraced.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
gunzip -f $C/dllm.gz
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    bash tools/ab-ways.sh $R/lines 2 "now:$C/dllm" step $M --batch 1,16,64,128
    pack
    bash tools/ab-ways.sh $R/generate 1 "now:$C/dllm" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
    pack
    W="default:$C/dllm"
    W+=";graphs256:$C/dllm:--cuda-graph-max-bs 256"
    W+=";fusedqkv:$C/dllm:--fused-qkv-rope true"
    W+=";m192off:$C/dllm:--moe-gate-up-m192 false"
    W+=";attdeepoff:$C/dllm:--att-deep false"
    W+=";attctas2:$C/dllm:--att-ctas-per-sm 2"
    W+=";combine:$C/dllm:--fused-moe-norm false"
    W+=";residoff:$C/dllm:--residual-gemm false"
    W+=";default2:$C/dllm"
    timeout $((570 - SECONDS)) bash tools/ab-ways.sh $R/sweep 1 "$W" step $M --batch 64,128
    pack
    echo "total: ${SECONDS}s"
    exit 0
fi
for b in 128 64; do
    for way in fused plain; do
        o=; [ $way = fused ] && o="--fused-qkv-rope true"
        CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/t.tsv timeout 120 $C/dllm bench step \
            --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch $b $o > $R/traced-b$b-$way.txt 2>&1
        echo "traced b$b $way rc=$? (${SECONDS}s) $(grep -E '^ +[0-9]+ (random|mask) ' $R/traced-b$b-$way.txt | awk '{printf "%s ms %sx", $5, $11}')"
        python3 tools/kernel-trace/timeline.py $R/t.tsv --steps 4 --gaps 5 > $R/timeline-b$b-$way.txt 2>&1
        grep -E "span|qkv|rope|block_attention|middle layer" $R/timeline-b$b-$way.txt | head -24
        rm -f $R/t.tsv
        pack
    done
done
bash tools/ab-ways.sh $R/steps 2 "fused:$C/dllm:--fused-qkv-rope true;plain:$C/dllm" step $M --batch 64,128
pack
echo "total: ${SECONDS}s"
