#!/usr/bin/env bash
# Session 68 call3: what graphs past batch 64 cost in GPU memory, to choose the default of
# --cuda-graph-max-bs (64 here; SGLang's on H100 and H200 below TP 4 is 256). Calls 1-2 (an H100)
# had graphs to 256 take 0.3-0.8 ms off a batch-128 step, greedy and sampled. Each run alone,
# with nvidia-smi polling the used memory every 100 ms (its peak printed): bench step at batch
# 128 and 256, greedy and sampled (temperature 0.7, top-p 0.9), eager (the default) and graphed to
# 256; bench generate with 128 and 256 requests, eager and graphed. Then, on an H200 only, the
# ncu of the timed steps' expert tiles. .carry/dllm as call1's.
set -uo pipefail
source tools/device-call.sh
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 16"
peak() {  # name, then the command: runs it with the poller, prints the peak MiB used
    local name=$1; shift
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > $R/mem-$name.txt &
    local poll=$!
    timeout 100 "$@" > $R/$name.txt 2>&1
    local rc=$?
    kill $poll; wait $poll 2>/dev/null
    echo "== $name rc=$rc peak $(sort -n $R/mem-$name.txt | tail -1) MiB ${SECONDS}s"
    grep -E '^ +[0-9]+ (random|mask) ' $R/$name.txt | awk '{printf "b%s %s %sx  ", $1, $5, $11}'
    grep -hE 'tokens/s|graphs|out of memory|rror' $R/$name.txt | cut -c1-200; echo
}
S="--temperature 0.7 --top-p 0.9"
G="--cuda-graph-max-bs 256"
peak step-greedy $C/dllm bench step $M --batch 128,256
peak step-greedy-g256 $C/dllm bench step $M --batch 128,256 $G
peak step-sampled $C/dllm bench step $M --batch 128,256 $S
peak step-sampled-g256 $C/dllm bench step $M --batch 128,256 $S $G
pack
peak gen128 $C/dllm bench generate --preset mini --device cuda --requests 128 --tokens-per-step 2
peak gen128-g256 $C/dllm bench generate --preset mini --device cuda --requests 128 --tokens-per-step 2 $G
peak gen256-g256 $C/dllm bench generate --preset mini --device cuda --requests 256 --tokens-per-step 2 $G
pack
echo "memory: ${SECONDS}s"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
    bash tools/ncu-expert-tiles.sh $R $C/dllm $((SECONDS + 200)) 110
fi
pack
echo "total: ${SECONDS}s"
