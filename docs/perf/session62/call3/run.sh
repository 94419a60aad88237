#!/usr/bin/env bash
# Session 62's third call: run inline on call2's warm machine (the same H100, .carry as call2's),
# this file written after it as its record. The first try found .carry/dllm.gz packed again (the
# working tree is sent afresh each call) and every run failed at once (rc 127); this is the
# second, with the gunzip. Steps at batch 32, 64 and 128 with the fused kernel from 1,024 rows,
# and `bench generate` with it from 2,048 rows, each against plain, one round.
R=$OUT/r; C=.carry; source tools/device-env.sh $R >/dev/null; gunzip -f $C/dllm.gz; M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"; bash tools/ab-ways.sh $R/steps 1 "plain:$C/dllm;fused:$C/dllm:--fused-qkv-rope true --fused-qkv-rope-min-rows 1024" step $M --batch 32,64,128; bash tools/ab-ways.sh $R/generate 1 "plain:$C/dllm;fused2048:$C/dllm:--fused-qkv-rope true --fused-qkv-rope-min-rows 2048" generate --preset mini --device cuda --requests 64 --tokens-per-step 2; (cd $OUT && tar czf r.tgz r)
