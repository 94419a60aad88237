#!/usr/bin/env bash
# Builds (here, where cargo is) everything the GPU machine runs, into .carry/ (git-ignored):
# the release binary and the test binaries, built with DLLM_REQUIRE_CUDA=1 and stripped of
# debug info to fit the 64 MiB carry limit. Then prints the device.run call to make;
# tools/gpu-test-device.sh is what runs there (it has no cargo and no network).
set -euo pipefail
cd "$(dirname "$0")/.."
export DLLM_REQUIRE_CUDA=1
cargo build --release
cargo test --release --no-run --message-format=json 2>/dev/null >.carry.json || { cargo test --release --no-run; exit 1; }
rm -rf .carry && mkdir -p .carry
cp target/release/dllm .carry/dllm
python3 - <<'PY'
import json, shutil
for line in open(".carry.json"):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        if m["target"]["name"] in ("cuda_kernels", "model_vs_fixtures"):
            shutil.copy(m["executable"], ".carry/test_" + m["target"]["name"])
PY
rm -f .carry.json
for f in .carry/*; do strip --strip-debug "$f"; done
ls -la .carry
du -sh .carry
cat <<'MSG'
Now call the device tool:
  run(command="bash tools/gpu-test-device.sh", carry=[".carry"], timeout_s=600)
MSG
