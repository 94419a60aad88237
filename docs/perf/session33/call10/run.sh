#!/usr/bin/env bash
# Session 33, call 10: is the traced idle stretch (cuBLAS's memset before layer 0's gate_up in a
# batch-64 graph) there untraced? dllm: b94e2ca's build (HEAD's code); dllm_ws0: the same with
# call3/ws0.patch (cuBLAS without a workspace: no memset). Five interleaved runs each, untraced.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
gunzip -c $C/dllm_ws0.gz > /tmp/dllm_ws0 && chmod +x /tmp/dllm_ws0
M="--preset mini --device cuda --block 32"
for i in 1 2 3 4 5; do
  timeout 60 $C/dllm bench step $M --prefix 1024 --steps 8 --batch 16,64 > $R/step-ws-$i.txt 2>&1
  timeout 60 /tmp/dllm_ws0 bench step $M --prefix 1024 --steps 8 --batch 16,64 > $R/step-ws0-$i.txt 2>&1
done
for i in 1 2 3; do
  timeout 60 $C/dllm bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-ws-$i.txt 2>&1
  timeout 60 /tmp/dllm_ws0 bench prefill $M --prompt-len 4096 --batch 1 > $R/prefill-ws0-$i.txt 2>&1
done
for n in ws ws0; do echo "== $n"; grep -h "^ *[0-9]" $R/step-$n-*.txt | awk '{print $1, $5}' | sort -n -s -k1,1 | awk '{a[$1]=a[$1]" "$2} END {for (k in a) print k": "a[k]}' | sort -n; grep -h "^ *4096" $R/prefill-$n-*.txt | awk '{print "prefill:", $4}'; done
grep -l "rror\|panic" $R/*.txt
cd $OUT && tar czf r.tgz r
