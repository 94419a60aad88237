#!/usr/bin/env bash
# Creates .venv-cuda with a pinned nvcc (CUDA 13.0) from PyPI, so build.rs can compile csrc/*.cu
# on a machine with no CUDA toolkit. The pins matter: an unpinned nvidia-nvvm pulls 13.5, whose
# PTX the 13.0 drivers of the GPU machines reject. nvidia-nvtx brings the header-only NVTX3
# that src/nvtx.rs's ranges are built with. libclang is what build.rs's bindgen reads
# csrc/params.h with (build.rs points clang-sys at it when LIBCLANG_PATH is unset).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-cuda/bin/pip ]; then
    "$PY" -m venv .venv-cuda
fi
.venv-cuda/bin/pip install -q \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-nvtx==13.0.85 \
    libclang==18.1.1
NVCC=$(ls .venv-cuda/lib/python3*/site-packages/nvidia/cu13/bin/nvcc | head -1)
"$NVCC" --version | tail -2
echo "nvcc: $NVCC (build.rs finds it there; or export NVCC=$PWD/$NVCC)"
