#!/usr/bin/env bash
# Session 35, call 4: the sampled line again (call 3 put sampled at +7.1% over greedy at batch 64,
# session 34 at +4.9%): sampled (temperature 0.7, top-p 0.9) and greedy steps interleaved, four
# pairs at batch 16 and 64, on 644b1aa's build with its defaults and with the code before
# (--residual-gemm false --qkv-bf16 false); bench kernels of a sampled batch-64 step each way.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 16,64"
OLD="--residual-gemm false --qkv-bf16 false"
S="--temperature 0.7 --top-p 0.9"
for i in 1 2 3 4; do
  timeout 60 $C/dllm bench step $M $S > $R/sampled-new-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M > $R/greedy-new-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M $S $OLD > $R/sampled-old-$i.txt 2>&1
  timeout 60 $C/dllm bench step $M $OLD > $R/greedy-old-$i.txt 2>&1
done
for f in sampled-new greedy-new sampled-old greedy-old; do echo "== $f"; grep -h "^ *[0-9]" $R/$f-*.txt | awk '{print $1, $5}' | sort -n -s -k1,1 | awk '{a[$1]=a[$1]" "$2} END {for (k in a) print k": "a[k]}' | sort -n; done
timeout 60 $C/dllm bench kernels --preset mini --device cuda --block 32 --prefix 1024 --batch 64 $S > $R/k-sampled-new-b64.txt 2>&1
timeout 60 $C/dllm bench kernels --preset mini --device cuda --block 32 --prefix 1024 --batch 64 $S $OLD > $R/k-sampled-old-b64.txt 2>&1
grep -H "sample_rows\|sum of kernel" $R/k-*.txt | sed 's|.*/r/||' | cut -c1-110
grep -l "rror\|panic" $R/*.txt
cd $OUT && tar czf r.tgz r
