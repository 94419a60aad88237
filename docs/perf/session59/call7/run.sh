#!/usr/bin/env bash
# Session 59's seventh call, given inline to the device tool on the H100 that call6's start drew
# (call6 exits at once off an H200): the CUDA suite and the fixtures on 65a056f (.carry from
# tools/gpu-test.sh, stripped and gzipped), as below.
R=$OUT/r; source tools/device-env.sh $R >/dev/null; SECONDS=0; bash tools/device-suite.sh $R; (cd $OUT && tar czf r.tgz r); echo "total ${SECONDS}s"
