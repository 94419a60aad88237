#!/usr/bin/env bash
# Session 40, call 5: the W8A8 threshold by width (flash from 4 rows an expert): flash fp8 at
# batch 4 and 8 by default against --fp8-activations false, interleaved, twice; mini fp8 at batch
# 4 and 8 (unchanged rule there) once each; the CUDA suite and fixtures; the guide's server on
# flash-shaped random weights with fp8 experts answering the guide's curl call.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
bash tools/device-suite.sh "$R"
pack
B="--device cuda --block 32 --prefix 1024 --steps 8"
for i in 1 2; do
  timeout 150 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1,4,8 > $R/f-fp8-$i.txt 2>&1
  timeout 150 $C/dllm bench step --preset flash --quantization fp8 $B --batch 1,4,8 --fp8-activations false > $R/f-a16-$i.txt 2>&1
done
timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 4,8 > $R/m-fp8.txt 2>&1
timeout 120 $C/dllm bench step --preset mini --quantization fp8 $B --batch 4,8 --fp8-activations false > $R/m-a16.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/f-*.txt $R/m-*.txt | sed 's|.*/r/||' | cut -c1-110
pack
# The guide's command line on one GPU with --quantization fp8 (flash's shapes, random weights; the
# prompt's prefill and steps at batch 1 run W8A8 and W8A16 respectively).
M=/tmp/flash-config
rm -rf $M && $C/dllm make-model --preset flash --config-only --out $M 2>&1 | tail -1
$C/dllm serve --model-path $M --load-format dummy --host 127.0.0.1 --port 8188 --trust-remote-code \
    --disable-cuda-graph --disable-radix-cache --mem-fraction-static 0.9 --attention-backend flashinfer \
    --diffusion-algorithm LowConfidence --diffusion-block-size 32 --tp-size 1 --max-running-requests 1 \
    --quantization fp8 > $R/serve.log 2>&1 &
pid=$!
for _ in $(seq 240); do curl -sf http://127.0.0.1:8188/health >/dev/null && break; sleep 1; done
echo "server up after ${SECONDS}s of this script"
curl -sN -X POST "http://127.0.0.1:8188/generate" -H "Content-Type: application/json" -d '{
    "text": "<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>Why did Camus say that Sisyphus was happy?<|role_end|><role>ASSISTANT</role>",
    "stream": true,
    "sampling_params": {"temperature": 0, "max_new_tokens": 256}
}' > $R/curl.txt 2>&1
echo "curl rc=$?: $(grep -c '^data:' $R/curl.txt) SSE events"; head -c 300 $R/curl.txt; echo; tail -c 300 $R/curl.txt; echo
kill $pid; wait $pid 2>/dev/null
grep -iE "error|panic" $R/serve.log | head -5
pack
