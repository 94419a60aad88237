#!/usr/bin/env bash
# Session 64's second call, never run (no device time left). Session 65 carried it forward, with
# down at batch 64, the L2's hit rate and looser time guards, as docs/perf/session65/call1/run.sh:
# run that one.
echo "superseded by docs/perf/session65/call1/run.sh" >&2
exit 1
