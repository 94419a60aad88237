#!/usr/bin/env bash
# Session 48's fifth call: no binary, only call3's ncu report of block_attention_deep at batch 64
# (carried as docs/perf/session48/call5/att-b64.ncu-rep, not committed): its SASS with the warp
# stall samples per instruction, to see which of the consumers' instructions the 8.7 cycles
# between issues go to.
set -uo pipefail
R=$OUT/r; mkdir -p $R
REP=docs/perf/session48/call5/att-b64.ncu-rep
ncu --import $REP --page source --csv --print-source sass > $R/att-b64-sass.csv 2> $R/sass-err.txt
echo "rc=$? $(wc -l < $R/att-b64-sass.csv) lines"; head -3 $R/att-b64-sass.csv | cut -c1-400; head -5 $R/sass-err.txt
(cd $OUT && tar czf r.tgz r)
