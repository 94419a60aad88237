#!/usr/bin/env bash
# Session 33, call 7: does the expert tiles' access pattern (128 rows x 128 bytes a k-step) read
# DRAM slower than whole rows or a flat stream? docs/perf/session33/call7/pattern.py (Triton).
set -uo pipefail
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/device.txt
timeout 240 python3 docs/perf/session33/call7/pattern.py > $R/pattern.txt 2>&1; echo "rc=$?" >> $R/pattern.txt
cat $R/pattern.txt
cd $OUT && tar czf r.tgz r
