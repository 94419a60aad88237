#!/usr/bin/env bash
# Runs ON the GPU machine, from the repo root: copies the named test binaries from .carry to /tmp,
# as tools/gpu-test.sh leaves them or gzipped (tools/carry-ab.sh gzips them to fit the carry
# limit), and makes them executable. Used by tools/cuda-tests.sh, tools/fixture-tests.sh and tools/tp-device.sh:
#   bash tools/unpack-tests.sh test_cuda_kernels [test_model_vs_fixtures ...]
set -euo pipefail
C=.carry
for b in "$@"; do
    if [ -f "$C/$b.gz" ]; then gunzip -c "$C/$b.gz" >"/tmp/$b"; else cp "$C/$b" "/tmp/$b"; fi
    chmod +x "/tmp/$b"
done
