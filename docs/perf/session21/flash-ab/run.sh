#!/usr/bin/env bash
# Session 21: flash with fp8 experts at batch 1 measured 14.49 ms in final/ against 14.13 in
# session 20. The two binaries of final/ (dllm: 2e8589f's code, dllm_base: 043ca00) and the
# scalar RoPE kernel (--rope-vectors false), interleaved, to see whether a change of this
# session moved it.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
F="bench step --preset flash --quantization fp8 --device cuda --block 32 --prefix 1024 --steps 8 --batch 1"
timeout 60 $C/dllm $F > $R/flash-dllm-1.txt 2>&1
timeout 60 $C/dllm_base $F > $R/flash-dllm_base-1.txt 2>&1
timeout 60 $C/dllm $F --rope-vectors false > $R/flash-dllm-scalar-rope.txt 2>&1
timeout 60 $C/dllm_base $F > $R/flash-dllm_base-2.txt 2>&1
timeout 60 $C/dllm $F > $R/flash-dllm-2.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/flash-*.txt | sed 's|.*/r/||' | cut -c1-110
cd $OUT && tar czf r.tgz r
