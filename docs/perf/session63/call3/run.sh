#!/usr/bin/env bash
# Session 63's third call, never run (no device time left). Session 64 carried it forward, with
# steps and generate added, as docs/perf/session64/call1/run.sh, which ran (its record is there).
echo "superseded by docs/perf/session64/call1/run.sh" >&2
exit 1
