"""tools/baseline_torch.py's router balancing (balance_router), run on the CPU at a preset's shape
with its first N layers: what --balanced-router does to the baseline's weights before it times
anything on a GPU. Session 46 (no torch on the GPU-less machines before it had run it nowhere).
    python3 -m venv .venv-torch && .venv-torch/bin/pip install -r tools/requirements-reference.txt
    .venv-torch/bin/python docs/perf/session46/baseline_balance_cpu.py mini 3
"""
import sys
import time

import torch

sys.path.insert(0, "tools")
import baseline_torch as bt  # noqa: E402

cfg = bt.PRESETS[sys.argv[1]]
n_layers = int(sys.argv[2])
dev = torch.device("cpu")
t0 = time.time()
W = bt.make_weights(cfg, n_layers, dev, torch.bfloat16, 0)
print(f"weights of {n_layers} layers made in {time.time() - t0:.1f} s", flush=True)
t0 = time.time()
# prefix 32 (the balance forwards' cache; routing reads the block's own rows), block 32, seed 0
r = bt.balance_router(cfg, W, n_layers, 32, 32, dev, 0, bt.Opts(attn="pack", gmm="loop", fused_head=False))
print(f"balanced in {time.time() - t0:.1f} s: {r}")
