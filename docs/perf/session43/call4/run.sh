#!/usr/bin/env bash
# Session 43, call 4 (call 3's build, the machine still warm): the step figures of issue 13's
# lines on this build (mini bf16 at batch 1-128, JSON) and `bench generate` (64 requests, 2 tokens
# a step). Run inline as one command line; written out here.
mkdir -p $OUT/r && source tools/device-env.sh $OUT/r >/dev/null
B="--device cuda --block 32 --prefix 1024 --steps 16"
timeout 120 .carry/dllm bench step --preset mini $B --batch 1,4,16,64,128 --json $OUT/r/step-mini-bf16.json > $OUT/r/step-mini-bf16.log 2>&1
head -12 $OUT/r/step-mini-bf16.log
timeout 90 .carry/dllm bench generate --preset mini --device cuda --requests 64 --prefix 1024 --tokens-per-step 2 --max-new-tokens 128 \
  --json $OUT/r/generate-mini-64.json > $OUT/r/generate-mini-64.log 2>&1
tail -4 $OUT/r/generate-mini-64.log
