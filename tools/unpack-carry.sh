#!/usr/bin/env bash
# Runs ON the GPU machine, from the repo root: gunzips, in place, every gzipped binary in .carry
# (tools/carry-ab.sh gzips them to fit the 64 MiB carry limit; tools/gpu-test.sh's are plain, and
# stay as they are). tools/device-call.sh and tools/gpu-test-device.sh start with it.
set -euo pipefail
for gz in .carry/*.gz; do
    [ -e "$gz" ] && gunzip -f "$gz"
done
exit 0
