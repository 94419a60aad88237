#!/usr/bin/env bash
# Builds tools/kernel-trace/kernel_trace.c into .carry/libkernel_trace.so (run here, not on the
# GPU machine: it has no compiler). The CUPTI headers and library come from the pinned CUDA 13.0
# wheel (nvidia-cuda-cupti, the version the GPU machines' PyTorch brings), unpacked under
# target/cupti. On the GPU machine the library is found through LD_LIBRARY_PATH
# (DEVICE_LIBS='libcupti.so.13*' before sourcing tools/device-env.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
W=target/cupti
if [ ! -f $W/nvidia/cu13/include/cupti.h ]; then
    mkdir -p $W
    .venv-cuda/bin/pip download -q --no-deps -d $W nvidia-cuda-cupti==13.0.85
    (cd $W && python3 -m zipfile -e nvidia_cuda_cupti-13.0.85-*.whl .)
fi
# cupti.h includes cuda.h: the runtime wheel of tools/setup-cuda.sh has it.
CUDA_INC=$(ls -d .venv-cuda/lib/python3*/site-packages/nvidia/cu13/include | head -1)
mkdir -p .carry
gcc -O2 -Wall -Wextra -shared -fPIC -o .carry/libkernel_trace.so tools/kernel-trace/kernel_trace.c \
    -I$W/nvidia/cu13/include -I"$CUDA_INC" -L$W/nvidia/cu13/lib -l:libcupti.so.13
echo "built .carry/libkernel_trace.so"
