#!/usr/bin/env bash
# Session 63's first call. .carry/dllm is 4f58858's build (session 62's last: qkv_rope_store on by
# default from 2,048 rows, lm_head_pick on for greedy steps), stripped and gzipped, with
# tools/kernel-trace/build.sh's library.
# 1. The whole CUDA suite and the fixtures under the new defaults (session 62 ran the suite at
#    d131681 with the fused QKV off by default); the benchmarks only if it passes.
# 2. The lines: steps at batch 1, 16, 64 and 128, two interleaved rounds of three ways: the
#    default, `--fused-qkv-rope false`, `--fused-pick false` (neither fusion has run on an H200).
# 3. `bench generate`: default / fused QKV off.
# 4. The kernel timeline of traced steps at batch 64 and 128 (default): where a layer's time goes
#    on this card now. 5. `bench kernels` at batch 64 and 128. 6. A 4,096 x 8 prefill.
# 7. On an H200 only, with the time left: session 58's knob sweep at batch 64 and 128 (tuned on
#    H100s; the H200's memory is 40% faster, its compute the same), one round.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
gunzip -f $C/dllm.gz
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv,noheader
bash tools/device-suite.sh $R/tests
grep -q "^rc=0" $R/tests/cuda-tests.txt; rc=$?
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; grep -h -B2 -A12 "panicked" $R/tests/cuda-tests.txt | head -60; pack; exit 1; }
pack
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
W="now:$C/dllm;qkvoff:$C/dllm:--fused-qkv-rope false;pickoff:$C/dllm:--fused-pick false"
bash tools/ab-ways.sh $R/lines 2 "$W" step $M --batch 1,16,64,128
pack
bash tools/ab-ways.sh $R/generate 1 "now:$C/dllm;qkvoff:$C/dllm:--fused-qkv-rope false" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
for b in 128 64; do
    CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/t.tsv timeout 120 $C/dllm bench step \
        $M --steps 8 --batch $b > $R/traced-b$b.txt 2>&1
    echo "traced b$b rc=$? (${SECONDS}s) $(grep -E '^ +[0-9]+ (random|mask) ' $R/traced-b$b.txt | awk '{printf "%s ms %sx", $5, $11}')"
    python3 tools/kernel-trace/timeline.py $R/t.tsv --steps 4 --gaps 5 > $R/timeline-b$b.txt 2>&1
    grep -m1 -A30 "^layer kind seen" $R/timeline-b$b.txt; grep "middle layer span" $R/timeline-b$b.txt
    rm -f $R/t.tsv
    pack
done
for b in 128 64; do
    timeout 120 $C/dllm bench kernels --preset mini --device cuda --prefix 1024 --batch $b > $R/kernels-b$b.txt 2>&1
    echo "kernels b$b rc=$? $(grep -h 'sum of kernel times' $R/kernels-b$b.txt)"
done
pack
timeout 90 $C/dllm bench prefill --preset mini --device cuda --prompt-len 4096 --batch 8 \
    --json $R/prefill.json > $R/prefill.txt 2>&1
echo "prefill 4096x8 rc=$? (${SECONDS}s) $(grep -E '^ +[0-9]' $R/prefill.txt | cut -c1-120)"
pack
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    W="default:$C/dllm;graphs256:$C/dllm:--cuda-graph-max-bs 256;m192off:$C/dllm:--moe-gate-up-m192 false"
    W+=";qkv1024:$C/dllm:--fused-qkv-rope-min-rows 1024;qkv4096:$C/dllm:--fused-qkv-rope-min-rows 4096"
    W+=";items64:$C/dllm:--moe-item-rows 64;attctas2:$C/dllm:--att-ctas-per-sm 2;shared0:$C/dllm:--shared-expert-items 0"
    W+=";attdeepoff:$C/dllm:--att-deep false;default2:$C/dllm"
    timeout $((580 - SECONDS)) bash tools/ab-ways.sh $R/sweep 1 "$W" step $M --batch 64,128
    pack
fi
echo "total: ${SECONDS}s"
