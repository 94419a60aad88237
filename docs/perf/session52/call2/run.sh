#!/usr/bin/env bash
# Session 52's third call (an H100 again likely; `.carry` as session 51's call1, built at 6b8eafb).
# Decides two defaults on evidence from one machine: block_attention_deep's ping-pong
# (`--att-pingpong`, off) by `bench kernels` at batch 64 and 128 and a 4,096 x 8 prefill, each
# way interleaved twice; and `--cuda-graph-max-bs` (64 here, 256 in SGLang on H100/H200) by
# bench generate with 128 requests (its steps at batch 128), eager against graphed. ~4 min.
set -uo pipefail
mkdir -p $OUT; R=$OUT/r; C=/tmp/bins
mkdir -p $C; gunzip -c .carry/dllm.gz > $C/dllm && chmod +x $C/dllm
source tools/device-env.sh "$R"
pack() { (cd $OUT && tar czf r.tgz r); }
SECONDS=0
for i in 1 2; do
  for way in off on; do
    for n in 64 128; do
      timeout 90 $C/dllm bench kernels --preset mini --device cuda --prefix 1024 --batch $n --att-pingpong $( [ $way = on ] && echo true || echo false ) > $R/kernels-b$n-$way-$i.txt 2>&1
      echo "kernels b$n pingpong-$way $i rc=$? ${SECONDS}s: $(grep -h "block_attention" $R/kernels-b$n-$way-$i.txt | cut -c1-120)"
    done
    timeout 90 $C/dllm bench prefill --preset mini --device cuda --prompt-len 4096 --batch 8 --att-pingpong $( [ $way = on ] && echo true || echo false ) \
        --json $R/prefill-$way-$i.json > $R/prefill-$way-$i.txt 2>&1
    echo "prefill pingpong-$way $i rc=$? ${SECONDS}s"; grep -E "^ +[0-9]|rror" $R/prefill-$way-$i.txt | cut -c1-160
    pack
  done
done
for i in 1 2; do
  for way in eager graphs; do
    extra=; [ $way = graphs ] && extra="--cuda-graph-max-bs 256"
    timeout 90 $C/dllm bench generate --preset mini --device cuda --requests 128 --tokens-per-step 2 $extra \
        --json $R/generate128-$way-$i.json > $R/generate128-$way-$i.txt 2>&1
    echo "generate 128 $way $i rc=$? ${SECONDS}s"; grep -h "tokens/s\|rror\|warning" $R/generate128-$way-$i.txt | cut -c1-200
    pack
  done
done
echo "total: ${SECONDS}s"
pack
