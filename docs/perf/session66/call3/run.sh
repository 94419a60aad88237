#!/usr/bin/env bash
# Session 66 call3: call2's ncu (docs/perf/session65/call1/run.sh, run on an H100 as call2) on an
# H200, to see whether there the L2 reaches its peak before DRAM does, as the H100's figures
# suggest (L2 87-90%, DRAM 79-85%). Same launches (the timed steps', by launch counts);
# .carry/dllm-base is e7ced1c's build (the session's HEAD has the same src and csrc).
# Call2 has the H100's figures: on any other card this call ends here.
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 || { echo "not an H200: nothing to do"; exit 0; }
exec bash docs/perf/session65/call1/run.sh
