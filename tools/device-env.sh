# Sourced by the scripts that run on the device machine (tools/*-device.sh, docs/perf/*/run.sh),
# from the repo root, with the folder for their outputs as its argument: puts the CUDA 13
# libraries the binary loads at run time on the loader's path (cuBLAS, and the patterns in
# DEVICE_LIBS, e.g. NCCL's), records where they were found (libs.txt) and the GPU (device.txt),
# and points the kernel cache at /tmp.
_dev_out=${1:?usage: source tools/device-env.sh OUTPUT_FOLDER}
mkdir -p "$_dev_out"
export DLLM_CACHE_DIR=${DLLM_CACHE_DIR:-/tmp/dllm-cache}
for _dev_lib in 'libcublas.so.13*' ${DEVICE_LIBS:-}; do
    _dev_f=$(ls /usr/local/cuda/lib64/$_dev_lib /usr/local/cuda-13*/lib64/$_dev_lib /usr/lib/x86_64-linux-gnu/$_dev_lib 2>/dev/null | head -1)
    [ -z "$_dev_f" ] && _dev_f=$(find / -xdev -name "$_dev_lib" 2>/dev/null | head -1)
    echo "$_dev_lib: ${_dev_f:-not found}" | tee -a "$_dev_out/libs.txt"
    [ -n "$_dev_f" ] && export LD_LIBRARY_PATH=$(dirname "$_dev_f"):${LD_LIBRARY_PATH:-}
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$_dev_out/device.txt"
unset _dev_out _dev_lib _dev_f
