#!/usr/bin/env bash
# Session 70 call3, as run (the command line of the call, on call2's warm H100 with the time left):
# sampled steps on the 2-CTA sampler (dllm, 1c56b69) against 4 (dllm-base, 9c77d81) at batch 64
# and 128, two interleaved rounds; then `bench generate` (64 requests, 2 tokens a step) once.
source tools/device-call.sh
S="--temperature 0.7 --top-p 0.9"
timeout 120 bash tools/ab-ways.sh $R/ab 2 "sampled:$C/dllm:$S;sampled-base:$C/dllm-base:$S" step --preset mini --device cuda --block 32 --prefix 1024 --steps 16 --batch 64,128
pack
timeout $((230 - SECONDS)) bash tools/ab-ways.sh $R/generate 1 "now:$C/dllm" generate --preset mini --device cuda --requests 64 --tokens-per-step 2
pack
echo "total ${SECONDS}s"
