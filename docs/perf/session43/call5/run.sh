#!/usr/bin/env bash
# Session 43, call 5: the two tests whose rows now come from one helper (logits_row), on the
# rebuilt test binary: row_argmax_matches_pick_row and row_top_kernel_matches_cpu_twin.
mkdir -p $OUT/r && source tools/device-env.sh $OUT/r >/dev/null
bash tools/unpack-tests.sh test_cuda_kernels
timeout 200 /tmp/test_cuda_kernels --test-threads=1 --nocapture row_argmax_matches_pick_row row_top_kernel_matches_cpu_twin > $OUT/r/tests.txt 2>&1
echo "rc=$?" >> $OUT/r/tests.txt
grep -E "^test |row_argmax:|row_top_k:|test result|rc=" $OUT/r/tests.txt
