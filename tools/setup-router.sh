#!/usr/bin/env bash
# Creates .venv-router with SGLang's model gateway (the `sglang-router` package: a Rust binary
# behind a Python launcher), pinned to the version tools/gateway_e2e.py and tests/gateway.rs were
# written against. tools/gateway.py starts it in front of local `dllm serve` replicas.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-router/bin/pip ]; then
    "$PY" -m venv .venv-router
fi
.venv-router/bin/pip install -q sglang-router==0.3.2
.venv-router/bin/python -c "import sglang_router.version as v; print('sglang-router', v.__version__, 'in .venv-router')"
