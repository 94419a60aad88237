#!/usr/bin/env bash
# Session 41's plan, call 2 (not run in session 41): session 40's call 6 as it stands, lost there
# when the machine stopped answering: the fp8 step figures as JSON (mini at batch 1-64, flash at
# 1-16; the rows now carry `expert_math` and `graph_recording`) and ncu of the W8A8 tiles at
# mini's batch 64. `dllm`: whatever call 1 kept.
exec bash docs/perf/session40/call6/run.sh
