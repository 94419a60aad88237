#!/usr/bin/env bash
# Session 62's first call. .carry/dllm is this session's build: qkv_rope_store launched as the
# input norm's programmatic dependent, its producers asking for their first stages' weights before
# pdl_wait (gemm_tiles.cuh, DEPENDENT); the default path (fused off) is db8b4b5's, lm_head_pick's
# sm_90a code byte-identical. .carry/dllm-base is db8b4b5's build (session 61's call6 ran the
# suite on it). Both stripped and gzipped, with tools/kernel-trace/build.sh's library.
# 1. The fused kernel's tests (its own, the new forward lockstep, graph replay with it on); the
#    benchmarks only if they pass.
# On an H200: 2. the lines (steps at batch 1, 16, 64 and 128, two rounds; `bench generate`),
#    3. session 58's knob sweep at batch 64 and 128 (the fused QKV among them) as time allows.
# On another card: 2. the kernel timeline of steps at batch 128 (fused base, fused new, plain) and
#    64 (fused new, plain): why session 61's faster fused kernel left the steps level; 3. steps at
#    batch 64 and 128: plain / fused base / fused new, two rounds.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
gunzip -f $C/dllm.gz $C/dllm-base.gz
bash tools/cuda-tests.sh $R/tests qkv_rope_store_fused_matches_cpu fused_qkv_rope_forward_lockstep_matches_cpu cuda_graph_replay_equals_eager
rc=$?
[ $rc -ne 0 ] && { echo "tests failed: no benchmarks"; grep -h -B2 -A12 "panicked" $R/tests/cuda-tests.txt | head -60; pack; exit 1; }
grep -h "fused qkv, block" $R/tests/cuda-tests.txt
pack
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
Q="--fused-qkv-rope true"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    bash tools/ab-ways.sh $R/lines 2 "now:$C/dllm" step $M --batch 1,16,64,128
    pack
    bash tools/ab-ways.sh $R/generate 1 "now:$C/dllm" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
    pack
    W="default:$C/dllm;fusedqkv:$C/dllm:$Q;fusedbase:$C/dllm-base:$Q"
    W+=";graphs256:$C/dllm:--cuda-graph-max-bs 256"
    W+=";m192off:$C/dllm:--moe-gate-up-m192 false"
    W+=";attdeepoff:$C/dllm:--att-deep false"
    W+=";combine:$C/dllm:--fused-moe-norm false"
    W+=";residoff:$C/dllm:--residual-gemm false"
    W+=";default2:$C/dllm"
    timeout $((570 - SECONDS)) bash tools/ab-ways.sh $R/sweep 1 "$W" step $M --batch 64,128
    pack
    echo "total: ${SECONDS}s"
    exit 0
fi
for run in b128:fusedbase b128:fused b128:plain b64:fused b64:plain; do
    b=${run%%:*}; way=${run#*:}; bin=$C/dllm; o=
    [ $way = fusedbase ] && bin=$C/dllm-base
    [ $way != plain ] && o=$Q
    CUDA_INJECTION64_PATH=$PWD/$C/libkernel_trace.so KERNEL_TRACE_OUT=$R/t.tsv timeout 120 $bin bench step \
        --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch ${b#b} $o > $R/traced-$b-$way.txt 2>&1
    echo "traced $b $way rc=$? (${SECONDS}s) $(grep -E '^ +[0-9]+ (random|mask) ' $R/traced-$b-$way.txt | awk '{printf "%s ms %sx", $5, $11}')"
    python3 tools/kernel-trace/timeline.py $R/t.tsv --steps 4 --gaps 5 > $R/timeline-$b-$way.txt 2>&1
    grep -E "^step 0|qkv|rope|block_attention|rms_norm|middle layer" $R/timeline-$b-$way.txt | head -12
    rm -f $R/t.tsv
    pack
done
timeout $((580 - SECONDS)) bash tools/ab-ways.sh $R/steps 2 "plain:$C/dllm;fusedbase:$C/dllm-base:$Q;fused:$C/dllm:$Q" step $M --batch 64,128
pack
echo "total: ${SECONDS}s"
